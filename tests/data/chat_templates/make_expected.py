"""Expected ids and labels of chat records, from transformers' apply_chat_template.

For each family's Hugging Face tokenizer (tokenizer.json + tokenizer_config.json with its chat
template), each conversation below is split as TRL's SFT trainer splits a conversation whose
last turn is the reply: the prompt is `apply_chat_template(messages[:-1],
add_generation_prompt=True)`, the full text `apply_chat_template(messages)`, both tokenized by
transformers (`tokenize=True`, which adds no special tokens the template does not write);
labels are -100 over the prompt and the ids after it. tests/chat_templates.rs checks that
webqlora's encoding of the same records gives these ids and labels.

Llama 3.x templates date their system header with `strftime_now` when no `date_string` is
given; webqlora renders the templates' own fallback date so a data set encodes the same on
every day, and this script passes that date (`date_string="26 Jul 2024"`).

Run (the tokenizer folders are what `cargo xtask fetch-model --model tokenizers` caches):
    pip install transformers jinja2
    python3 tests/data/chat_templates/make_expected.py ~/.cache/webqlora/tokenizers \
        > tests/data/chat_templates/expected.json
"""

import json
import sys

import transformers
from transformers import AutoTokenizer

FAMILIES = ["qwen3", "qwen2_5", "llama3_2", "gemma3"]

CONVERSATIONS = [
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ],
    [
        {"role": "user", "content": "Name a prime number between 10 and 20."},
        {"role": "assistant", "content": "13 is one; 11, 17 and 19 are the others."},
    ],
    [
        {"role": "user", "content": "Translate 'good morning' into German."},
        {"role": "assistant", "content": "Guten Morgen."},
        {"role": "user", "content": "And into Italian?"},
        {"role": "assistant", "content": "Buongiorno!\nIt is also used as a greeting until the afternoon."},
    ],
]

DATE = "26 Jul 2024"


def ids_of(tok, messages, add_generation_prompt):
    out = tok.apply_chat_template(
        messages,
        tokenize=True,
        add_generation_prompt=add_generation_prompt,
        date_string=DATE,
    )
    if hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def main(root):
    result = {"transformers": transformers.__version__, "families": {}}
    for family in FAMILIES:
        tok = AutoTokenizer.from_pretrained(f"{root}/{family}")
        cases = []
        for messages in CONVERSATIONS:
            full = ids_of(tok, messages, False)
            prompt = ids_of(tok, messages[:-1], True)
            assert full[: len(prompt)] == prompt, (family, messages)
            labels = [-100] * len(prompt) + full[len(prompt) :]
            cases.append({"messages": messages, "ids": full, "labels": labels})
        result["families"][family] = cases
    # One case a line.
    lines = ['{"transformers": %s, "families": {' % json.dumps(result["transformers"])]
    for i, (family, cases) in enumerate(result["families"].items()):
        lines.append(" %s: [" % json.dumps(family))
        for j, case in enumerate(cases):
            end = "," if j + 1 < len(cases) else ""
            lines.append("  " + json.dumps(case, ensure_ascii=False) + end)
        lines.append(" ]" + ("," if i + 1 < len(result["families"]) else ""))
    lines.append("}}")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
