//! Resumable checkpoints: the adapter (PEFT files), the AdamW moments and the trainer's state
//! (step, seed, settings) in one folder, replaced as a whole: written under a temporary
//! name, then renamed into place, so a crash leaves the previous checkpoint intact.

use std::path::Path;

use crate::lora::peft::Adapter;
use crate::model::safetensors_files::SafetensorsFiles;
use crate::model::ModelError;
use crate::train::dump_step::{write_tensors, Tensors};
pub use crate::train::trainer::TrainerState;

const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "trainer_state.json";
const ADAPTER_CONFIG: &str = "adapter_config.json";
const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

fn io(path: &Path, source: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The checkpoint folder of a training run's output folder.
pub const DIR: &str = "checkpoint";

/// Save a training run's state into its output folder `out`: the adapter's two files at the
/// top (what users load) and the checkpoint folder (`--resume`), written together so that a
/// failed write (a full disk) leaves the previous pair untouched and never an adapter a step
/// ahead of or behind its checkpoint.
pub fn save(
    out: &Path,
    adapter: &Adapter,
    moments: &Tensors,
    state: &TrainerState,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let (config_text, weights) = adapter.to_bytes()?;
    let (config_path, weights_path) = (out.join(ADAPTER_CONFIG), out.join(ADAPTER_WEIGHTS));
    let files: [(&Path, &[u8]); 2] = [
        (&weights_path, &weights),
        (&config_path, config_text.as_bytes()),
    ];
    crate::io::replace_together(&out.join(DIR), &files, io, |tmp| {
        std::fs::write(tmp.join(ADAPTER_WEIGHTS), &weights)
            .map_err(|e| io(&tmp.join(ADAPTER_WEIGHTS), e))?;
        std::fs::write(tmp.join(ADAPTER_CONFIG), &config_text)
            .map_err(|e| io(&tmp.join(ADAPTER_CONFIG), e))?;
        write_tensors(&tmp.join(OPTIMIZER), moments)?;
        std::fs::write(tmp.join(STATE), state.to_json()).map_err(|e| io(&tmp.join(STATE), e))
    })
}

/// The checkpoint folder to resume `out` from: `out/checkpoint`, or the previous one a crash
/// between a save's renames left as `checkpoint.old`.
pub fn find(out: &Path) -> Option<std::path::PathBuf> {
    crate::io::previous_dir(&out.join(DIR))
}

/// Read a checkpoint folder: adapter, moments, state.
pub fn load(dir: &Path) -> Result<(Adapter, Tensors, TrainerState), ModelError> {
    let adapter = Adapter::load(dir)?;
    let path = dir.join(OPTIMIZER);
    let files = SafetensorsFiles::open_files(std::slice::from_ref(&path))?;
    let mut moments = Vec::new();
    for name in files.names() {
        let (_, shape, _) = files.raw(name)?;
        let values = files.f32(name, &shape)?;
        moments.push((name.to_string(), shape, values));
    }
    let state_path = dir.join(STATE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| io(&state_path, e))?;
    let state = TrainerState::parse(&text, &state_path)?;
    Ok((adapter, moments, state))
}
