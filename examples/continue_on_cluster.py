#!/usr/bin/env python3
"""Continue a webqlora run on a GPU cluster with Hugging Face TRL.

webqlora writes a PEFT adapter (adapter_config.json + adapter_model.safetensors). This script
loads it into the base model, reads the same JSONL webqlora trained on, and goes on training
with TRL's SFTTrainer under accelerate: one GPU, several (DDP), or FSDP. The LoRA settings
(rank, alpha, rsLoRA, dropout, target modules) come from the adapter's own config; the loss is
taken where webqlora takes it (answers, completions and the last assistant turn, not the
prompt, unless --train-on-inputs); AdamW, clipping and the schedule default to webqlora's.
What it saves is again a PEFT adapter, which `webqlora generate/eval/merge/export --adapter`
and the page take back.

    # one GPU
    python examples/continue_on_cluster.py --model MODEL --adapter RUN/ --data data.jsonl \\
        --output more/ --steps 1000
    # eight GPUs, DDP (QLoRA: add --load-in-4bit)
    accelerate launch --multi_gpu --num_processes 8 examples/continue_on_cluster.py ...
    # FSDP across GPUs and machines
    accelerate launch --config_file examples/accelerate_fsdp.yaml examples/continue_on_cluster.py ...

MODEL is the Hugging Face folder (or hub id) of the model webqlora trained: for a GGUF, the
original model it was converted from. Needs torch, transformers, peft, trl, accelerate
(and bitsandbytes for --load-in-4bit).

Records, one JSON object a line, as webqlora reads them (one kind a file):
  {"text": ...}                          language modelling, EOS appended
  {"prompt": ..., "completion": ...}     loss on the completion
  {"question", "choices", "answer"}      webqlora's MCQ prompt, loss on " <answer text>"
  {"messages": [...]}                    loss on the last assistant turn
  {"input_ids": [...], "labels": [...]}  already tokenized (labels optional, -100: no loss)
"""

import argparse
import json
import math
import os
import sys

LETTERS = "ABCDEFGHIJ"


def fail(msg):
    print(f"continue_on_cluster: {msg}", file=sys.stderr)
    sys.exit(2)


def mcq_prompt(q):
    """webqlora's multiple-choice prompt (src/data/mcq.rs)."""
    text = f"Question: {q['question']}\n"
    for letter, choice in zip(LETTERS, q["choices"]):
        text += f"{letter}. {choice}\n"
    return text + "Answer:"


def mcq_answer(q, line, path):
    a, n = q["answer"], len(q["choices"])
    if isinstance(a, str) and len(a.strip()) == 1 and a.strip().isalpha():
        a = LETTERS.find(a.strip().upper())
    elif isinstance(a, str):
        a = int(a) if a.strip().isdigit() else -1
    if not isinstance(a, int) or not 0 <= a < n:
        fail(f"{path}:{line}: 'answer' {q['answer']!r} is not an index below {n} or a letter")
    return a


def read_records(path):
    """The JSONL's records in TRL's dataset formats, and their kind."""
    rows, kind = [], None
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                r = json.loads(text)
            except json.JSONDecodeError as e:
                fail(f"{path}:{line}: not JSON ({e})")
            if "messages" in r:
                msgs = r["messages"]
                if not msgs or msgs[-1].get("role") != "assistant":
                    fail(f"{path}:{line}: the last message must be the assistant's")
                row, k = {"prompt": msgs[:-1], "completion": msgs[-1:]}, "chat"
            elif "prompt" in r and "completion" in r:
                row, k = {"prompt": r["prompt"], "completion": r["completion"]}, "prompt-completion"
            elif "question" in r and "choices" in r and "answer" in r:
                answer = mcq_answer(r, line, path)
                row = {"prompt": mcq_prompt(r), "completion": " " + r["choices"][answer]}
                k = "prompt-completion"
            elif "text" in r:
                row, k = {"text": r["text"]}, "text"
            elif "input_ids" in r:
                ids = r["input_ids"]
                labels = r.get("labels", ids)
                if len(labels) != len(ids):
                    fail(f"{path}:{line}: {len(labels)} labels for {len(ids)} input_ids")
                row, k = {"input_ids": ids, "labels": labels}, "tokens"
            else:
                fail(f"{path}:{line}: none of messages, prompt/completion, question/choices/answer, text, input_ids")
            if kind not in (None, k):
                fail(f"{path}:{line}: a {k} record in a file of {kind} records (TRL takes one kind a dataset)")
            kind = k
            rows.append(row)
    if not rows:
        fail(f"{path}: no records")
    return rows, kind


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the base model's Hugging Face folder or hub id")
    p.add_argument("--adapter", required=True, help="webqlora's PEFT adapter folder")
    p.add_argument("--data", required=True, help="the JSONL webqlora trained on")
    p.add_argument("--output", required=True, help="where the continued adapter goes")
    p.add_argument("--tokenizer", help="tokenizer folder, when the model folder has none")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=4, help="per GPU")
    p.add_argument("--accumulation", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine", "constant"])
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--train-on-inputs", action="store_true", help="take the loss on prompts too")
    p.add_argument("--load-in-4bit", action="store_true", help="QLoRA: the base in NF4 (bitsandbytes)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--in-order", action="store_true", help="batches in file order (no shuffling)")
    p.add_argument("--save-steps", type=int, default=0, help="a checkpoint every N steps (0: at the end)")
    p.add_argument("--report", help="write the first batch's loss (and the batch, .safetensors) here")
    args = p.parse_args()

    import torch
    from datasets import Dataset
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    for f in ("adapter_config.json", "adapter_model.safetensors"):
        if not os.path.isfile(os.path.join(args.adapter, f)):
            fail(f"{args.adapter}: no {f} (webqlora train/export writes both)")
    rows, kind = read_records(args.data)

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    kwargs = {"dtype": dtype}
    if args.load_in_4bit:
        from transformers import BitsAndBytesConfig

        # NF4 with double quantization, blocksize 64: the base webqlora trained against.
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_storage=dtype,  # FSDP shards 4-bit weights stored in this dtype
        )
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    model = PeftModel.from_pretrained(model, args.adapter, is_trainable=True)

    # It starts from the adapter's weights: every tensor of the file, in the model.
    saved = load_file(os.path.join(args.adapter, "adapter_model.safetensors"))
    # PEFT's file names: no adapter name, and a DoRA magnitude without its ".weight".
    params = {
        n.replace(".default", "").replace("lora_magnitude_vector.weight", "lora_magnitude_vector"): t
        for n, t in model.named_parameters()
        if "lora_" in n
    }
    for name, tensor in saved.items():
        mine = params.get(name)
        if mine is None or mine.shape != tensor.shape:
            fail(f"{args.adapter}: tensor {name} {tuple(tensor.shape)} is not in the model")
        if not torch.equal(mine.detach().float().cpu(), tensor.float()):
            fail(f"{args.adapter}: tensor {name} did not load as saved")
    print(f"continue_on_cluster: {len(saved)} adapter tensors loaded from {args.adapter}")

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    config = SFTConfig(
        output_dir=args.output,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=args.accumulation,
        learning_rate=args.lr,
        lr_scheduler_type=args.schedule,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm if args.max_grad_norm > 0 else None,
        # torch's AdamW with its defaults, as webqlora's.
        optim="adamw_torch",
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_length=args.max_seq_len,
        completion_only_loss=not args.train_on_inputs,
        seed=args.seed,
        logging_steps=1,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        report_to=[],
        bf16=dtype == torch.bfloat16,
        use_cpu=not cuda,
        **({"gradient_checkpointing": True} if args.gradient_checkpointing else {}),
    )
    first = {}

    class Trainer(SFTTrainer):
        def _get_train_sampler(self, *a, **k):
            if args.in_order:
                return torch.utils.data.SequentialSampler(self.train_dataset)
            return super()._get_train_sampler(*a, **k)

        def compute_loss(self, model, inputs, *a, **k):
            out = super().compute_loss(model, inputs, *a, **k)
            if not first:
                loss = out[0] if isinstance(out, tuple) else out
                first["loss"] = loss.item()
                first["batch"] = {
                    "input_ids": inputs["input_ids"].detach().cpu().to(torch.int64).contiguous(),
                    "labels": inputs["labels"].detach().cpu().to(torch.int64).contiguous(),
                }
            return out

    trainer = Trainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    result = trainer.train()
    if trainer.is_fsdp_enabled:
        # One adapter file, not shards: what webqlora and PEFT load.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(args.output)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(f"continue_on_cluster: {kind} records, {result.global_step} steps, first loss {first.get('loss')}, "
          f"last {losses[-1] if losses else None}; the adapter is in {args.output}")
    if args.report and trainer.is_world_process_zero():
        save_file(first["batch"], args.report + ".safetensors")
        with open(args.report, "w") as f:
            json.dump({"first_loss": first["loss"], "losses": losses, "steps": result.global_step,
                       "adapter_tensors": len(saved)}, f)
    if not all(math.isfinite(x) for x in losses):
        fail(f"a loss is not finite: {losses}")


if __name__ == "__main__":
    main()
