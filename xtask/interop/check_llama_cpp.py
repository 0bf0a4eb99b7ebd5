"""llama.cpp (through llama-cpp-python) runs what webqlora exports: GGUF LoRA adapters loaded on
top of a base GGUF, and merged GGUFs. Run by `cargo xtask interop`.

  check_llama_cpp.py tokens BASE.gguf OUT_DIR
      The token ids of a fixed prompt (BOS first) as llama.cpp tokenizes it: OUT_DIR/ids.json
      and OUT_DIR/batch.safetensors (input_ids and labels, for `webqlora dump-step`).
  check_llama_cpp.py zero ADAPTER_DIR OUT_DIR
      A copy of a PEFT adapter with every B zeroed: the base model through the same graph.
  check_llama_cpp.py logits MODEL.gguf IDS.json OURS.safetensors MAX_REL [--lora ADAPTER.gguf]
      llama.cpp's logits for the ids against webqlora's (dump-step's `logits`): the relative
      difference must stay under MAX_REL, and the next-token argmax must agree.
  check_llama_cpp.py change BASE.gguf ADAPTER.gguf IDS.json OURS.safetensors OURS0.safetensors MAX_REL
      The change an adapter makes to llama.cpp's logits (with the GGUF LoRA against without)
      against the change it makes to webqlora's (with the adapter against with B zeroed):
      for bases whose products differ (llama.cpp multiplies quantized weights by 8-bit
      activations, webqlora by f32 ones), where the logits themselves cannot agree closely.

Each check prints one JSON line and exits 1 when it fails.
"""

import json
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

PROMPT = ("Question: What is the capital of Egypt?\nA. Helsinki\nB. Geneva\nC. Abuja\n"
          "D. Cairo\nAnswer:")


def llama(model, lora=None, n_ctx=128):
    from llama_cpp import Llama
    kwargs = dict(model_path=model, n_ctx=n_ctx, logits_all=True, verbose=False,
                  n_threads=2, seed=0)
    if lora:
        kwargs["lora_path"] = lora
    return Llama(**kwargs)


def llama_logits(model, ids, lora=None):
    llm = llama(model, lora)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


def ours(path, n):
    return load_file(path)["logits"].astype(np.float64).reshape(n, -1)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def report(result, ok, what):
    print(json.dumps(result))
    if not ok:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


def tokens(base, out):
    from llama_cpp import Llama
    llm = Llama(model_path=base, vocab_only=True, verbose=False)
    ids = [llm.token_bos()] + llm.tokenize(PROMPT.encode(), add_bos=False)
    os.makedirs(out, exist_ok=True)
    json.dump(ids, open(f"{out}/ids.json", "w"))
    arr = np.array([ids], dtype=np.int64)
    save_file({"input_ids": arr, "labels": arr.copy()}, f"{out}/batch.safetensors")


def zero(adapter, out):
    os.makedirs(out, exist_ok=True)
    shutil.copy(f"{adapter}/adapter_config.json", out)
    t = load_file(f"{adapter}/adapter_model.safetensors")
    t = {k: (np.zeros_like(v) if ".lora_B." in k else v) for k, v in t.items()}
    save_file(t, f"{out}/adapter_model.safetensors", metadata={"format": "pt"})


def logits(model, ids_path, ours_path, max_rel, lora=None):
    ids = json.load(open(ids_path))
    mine = ours(ours_path, len(ids))
    theirs = llama_logits(model, ids, lora)
    v = min(mine.shape[1], theirs.shape[1])
    mine, theirs = mine[:, :v], theirs[:, :v]
    argmax = float(np.mean(np.argmax(theirs, 1) == np.argmax(mine, 1)))
    r = rel(theirs, mine)
    report({"check": "logits", "model": os.path.basename(model),
            "lora": lora and os.path.basename(lora), "tokens": len(ids), "rel_diff": r,
            "argmax_agreement": argmax},
           r < max_rel and argmax >= 0.9, "llama.cpp's logits differ from webqlora's")


def change(base, lora, ids_path, ours_with, ours_zero, max_rel):
    ids = json.load(open(ids_path))
    mine, mine0 = ours(ours_with, len(ids)), ours(ours_zero, len(ids))
    theirs0 = llama_logits(base, ids)
    theirs = llama_logits(base, ids, lora)
    v = min(mine.shape[1], theirs.shape[1])
    d_mine = (mine - mine0)[:, :v]
    d_theirs = (theirs - theirs0)[:, :v]
    r = rel(d_theirs, d_mine)
    cos = float(np.sum(d_theirs * d_mine) / (np.linalg.norm(d_theirs) * np.linalg.norm(d_mine)))
    moved = float(np.linalg.norm(d_mine) / np.linalg.norm(mine0[:, :v]))
    report({"check": "change", "model": os.path.basename(base), "tokens": len(ids),
            "base_rel_diff": rel(theirs0[:, :v], mine0[:, :v]), "adapter_moves_logits_by": moved,
            "change_rel_diff": r, "change_cosine": cos},
           r < max_rel and moved > 0.01,
           "llama.cpp's change of the logits does not follow webqlora's")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "tokens":
        tokens(*args)
    elif cmd == "zero":
        zero(*args)
    elif cmd == "logits":
        lora = None
        if "--lora" in args:
            i = args.index("--lora")
            lora = args[i + 1]
            args = args[:i] + args[i + 2:]
        logits(args[0], args[1], args[2], float(args[3]), lora)
    elif cmd == "change":
        change(*args[:5], float(args[5]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
