//! Resumable checkpoints: the adapter (PEFT files), the AdamW moments and the trainer's state
//! (step, seed, settings) in one folder, replaced as a whole: written under a temporary
//! name, then renamed into place, so a crash leaves the previous checkpoint intact.

use std::path::Path;

use crate::lora::peft::Adapter;
use crate::model::safetensors_files::SafetensorsFiles;
use crate::model::ModelError;
use crate::train::dump_step::{write_tensors, Tensors};

const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "trainer_state.json";

fn io(path: &Path, source: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Write the checkpoint folder `dir`.
pub fn save(
    dir: &Path,
    adapter: &Adapter,
    moments: &Tensors,
    state: &serde_json::Value,
) -> Result<(), ModelError> {
    crate::io::replace_dir(dir, io, |tmp| {
        adapter.save(tmp)?;
        write_tensors(&tmp.join(OPTIMIZER), moments)?;
        let text = serde_json::to_string_pretty(state).expect("a JSON value");
        std::fs::write(tmp.join(STATE), text).map_err(|e| io(&tmp.join(STATE), e))
    })
}

/// Read a checkpoint folder: adapter, moments, state.
pub fn load(dir: &Path) -> Result<(Adapter, Tensors, serde_json::Value), ModelError> {
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
    let state = serde_json::from_str(&text).map_err(|e| ModelError::Invalid {
        path: state_path.display().to_string(),
        msg: format!("not valid JSON: {e}"),
    })?;
    Ok((adapter, moments, state))
}
