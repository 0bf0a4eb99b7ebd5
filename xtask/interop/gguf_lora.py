"""llama.cpp loads webqlora's GGUF LoRA export and moves its logits as webqlora does.

Run by `cargo xtask interop` (which builds llama-cpp-python from source in a virtual
environment): given a base GGUF, a PEFT adapter trained by webqlora, the adapter exported with
`webqlora export --format gguf-lora`, and webqlora's logits for the same tokens with the adapter
and with its B factors zeroed (`webqlora dump-step --base gguf`), compare the change the adapter
makes to llama.cpp's next-token logits with the change it makes to webqlora's.

The two bases differ already (llama.cpp multiplies Q4_1 weights by 8-bit activations, webqlora
by f32 ones), so the logits are not compared, their changes are: the relative difference of the
changes and their cosine. A wrong tensor name fails the load; a missing q/k row permutation,
a transposed factor or a wrong alpha moves llama.cpp's logits differently, which the bounds catch.

usage: gguf_lora.py BASE.gguf ADAPTER.gguf IDS.json OURS_WITH.safetensors OURS_ZERO.safetensors
"""

import json
import sys

import numpy as np
from llama_cpp import Llama
from safetensors.numpy import load_file


def llama_logits(base, ids, lora=None):
    kwargs = dict(model_path=base, n_ctx=max(64, len(ids) + 8), logits_all=True,
                  verbose=False, n_threads=2, seed=0)
    if lora:
        kwargs["lora_path"] = lora
    llm = Llama(**kwargs)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


def main():
    base, adapter, ids_path, ours_with, ours_zero = sys.argv[1:6]
    ids = json.load(open(ids_path))
    ours = load_file(ours_with)["logits"].astype(np.float64).reshape(len(ids), -1)
    ours0 = load_file(ours_zero)["logits"].astype(np.float64).reshape(len(ids), -1)
    theirs0 = llama_logits(base, ids)
    theirs = llama_logits(base, ids, adapter)
    vocab = min(ours.shape[1], theirs.shape[1])
    d_ours = (ours - ours0)[:, :vocab]
    d_theirs = (theirs - theirs0)[:, :vocab]
    base_diff = np.linalg.norm(theirs0[:, :vocab] - ours0[:, :vocab]) / np.linalg.norm(ours0[:, :vocab])
    rel = np.linalg.norm(d_theirs - d_ours) / np.linalg.norm(d_ours)
    cos = float(np.sum(d_theirs * d_ours) / (np.linalg.norm(d_theirs) * np.linalg.norm(d_ours)))
    moved = np.linalg.norm(d_ours) / np.linalg.norm(ours0[:, :vocab])
    argmax_same = float(np.mean(np.argmax(theirs[:, :vocab], 1) == np.argmax(ours[:, :vocab], 1)))
    result = {
        "tokens": len(ids),
        "base_logits_rel_diff": float(base_diff),
        "adapter_moves_logits_by": float(moved),
        "change_rel_diff": float(rel),
        "change_cosine": cos,
        "argmax_agreement_with_adapter": argmax_same,
    }
    print(json.dumps(result))
    ok = rel < 0.15 and cos > 0.99 and moved > 0.01
    if not ok:
        print("FAIL: llama.cpp's change of the logits does not follow webqlora's", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
