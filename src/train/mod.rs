//! Training: the compiled step (`session`), learning-rate schedules, evaluation, checkpoints
//! and the loop that ties them together (`trainer`); `dump_step` for the golden comparison.

#[cfg(not(target_arch = "wasm32"))]
pub mod checkpoint;
pub mod data_order;
#[cfg(not(target_arch = "wasm32"))]
pub mod dump_step;
pub mod evaluate;
pub mod fit;
#[cfg(not(target_arch = "wasm32"))]
pub mod model_source;
pub mod recipe;
pub mod schedule;
pub mod session;
pub mod trainer;

/// Everything training can fail on, each naming what and where.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Graph(#[from] crate::graph::GraphError),
    #[error(transparent)]
    Run(#[from] crate::graph::RunError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("{0}")]
    Invalid(String),
}
