//! An Ollama Modelfile for a fine-tuned model: `FROM` the base GGUF, `ADAPTER` the GGUF LoRA
//! beside it, and, for the chat formats Ollama needs told, the base's chat template as a Go
//! `TEMPLATE` with its `stop` tokens, so `ollama create NAME -f DIR/Modelfile` runs the model
//! as it was trained (Ollama's Modelfile reference: docs/modelfile.md).
//!
//! The training side renders chats with the GGUF's own Jinja template
//! (`tokenizer.chat_template`); Ollama renders Go templates. The formats below are recognized
//! by their markers in the Jinja text, and a format's Go template is written only when it
//! renders exactly what the Jinja template does for a chat with and without a system message
//! (`verified_chat`); otherwise Ollama is left to read the GGUF's chat template itself.

use crate::tokenizer::Message;

/// A chat format Ollama is given a template for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatFormat {
    /// `<|im_start|>role … <|im_end|>`: Qwen2/2.5/3, SmolLM2, many others.
    ChatMl,
    /// `<|start_header_id|>role<|end_header_id|> … <|eot_id|>`: Llama 3.x.
    Llama3,
    /// `<start_of_turn>user … <end_of_turn>`: Gemma 2/3 (no system role: it precedes the
    /// user's text, as Gemma's template does).
    Gemma,
}

impl ChatFormat {
    /// The format a Jinja chat template writes, by its markers.
    pub fn of(jinja: &str) -> Option<ChatFormat> {
        if jinja.contains("<|im_start|>") {
            Some(ChatFormat::ChatMl)
        } else if jinja.contains("<|start_header_id|>") {
            Some(ChatFormat::Llama3)
        } else if jinja.contains("<start_of_turn>") {
            Some(ChatFormat::Gemma)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChatFormat::ChatMl => "ChatML",
            ChatFormat::Llama3 => "Llama 3",
            ChatFormat::Gemma => "Gemma",
        }
    }

    /// The Go template (Ollama's `.System`, `.Prompt`, `.Response`).
    pub fn template(self) -> &'static str {
        match self {
            ChatFormat::ChatMl => {
                "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\
                 {{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}\
                 <|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
            }
            ChatFormat::Llama3 => {
                "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n\
                 {{ .System }}<|eot_id|>{{ end }}\
                 {{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n\
                 {{ .Prompt }}<|eot_id|>{{ end }}\
                 <|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>"
            }
            ChatFormat::Gemma => {
                "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}\
                 {{ .Prompt }}<end_of_turn>\n<start_of_turn>model\n{{ .Response }}<end_of_turn>\n"
            }
        }
    }

    /// The tokens that end a reply.
    pub fn stops(self) -> &'static [&'static str] {
        match self {
            ChatFormat::ChatMl => &["<|im_start|>", "<|im_end|>"],
            ChatFormat::Llama3 => &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
            ChatFormat::Gemma => &["<end_of_turn>"],
        }
    }
}

/// How a chat template renders: `messages` with the generation prompt, or None where the
/// template fails (the tokenizer's `apply_chat_template`).
pub type Render<'a> = &'a dyn Fn(&[Message]) -> Option<String>;

/// What a Modelfile says about chats, checked against the base's own template.
#[derive(Clone, Debug, PartialEq)]
pub struct Chat {
    pub format: ChatFormat,
    /// The system message the base's template writes when a chat has none (SmolLM2's), for
    /// Ollama's `SYSTEM`.
    pub default_system: Option<String>,
}

/// The chat format whose Go template renders exactly what the base's Jinja template does for
/// a chat with and without a system message (`bos`, the BOS text, dropped from the Jinja
/// side's start: llama.cpp adds BOS when it tokenizes), with the system message the Jinja
/// template adds on its own; None where no format renders the same text, so a Modelfile never
/// tells Ollama to prompt the model otherwise than it was trained.
pub fn verified_chat(jinja: &str, render: Render, bos: Option<&str>) -> Option<Chat> {
    let format = ChatFormat::of(jinja)?;
    let message = |role: &str, content: &str| Message {
        role: role.into(),
        content: content.into(),
    };
    let jinja_text = |messages: &[Message]| {
        let text = render(messages)?;
        Some(match bos {
            Some(b) if !b.is_empty() => text.strip_prefix(b).map(str::to_string).unwrap_or(text),
            _ => text,
        })
    };
    let (system, prompt) = ("You answer briefly.", "What is 2 + 2?");
    let with = jinja_text(&[message("system", system), message("user", prompt)])?;
    if go_render(format.template(), Some(system), prompt)? != with {
        return None;
    }
    let without = jinja_text(&[message("user", prompt)])?;
    if go_render(format.template(), None, prompt)? == without {
        return Some(Chat {
            format,
            default_system: None,
        });
    }
    // The template writes a system message of its own: find it between what the Go template
    // writes around a system message.
    let marker = "\u{1}";
    let around = go_render(format.template(), Some(marker), prompt)?;
    let (before, after) = around.split_once(marker)?;
    let default = without
        .strip_prefix(before)
        .and_then(|rest| rest.strip_suffix(after))?;
    (!default.is_empty() && !default.contains("\"\"\"")).then(|| Chat {
        format,
        default_system: Some(default.to_string()),
    })
}

/// The subset of Go's text/template the formats above use: text, `{{ .System }}`,
/// `{{ .Prompt }}`, `{{ if .X }} … {{ end }}` (not nested), rendered up to `{{ .Response }}`,
/// where Ollama's prompt ends and the reply begins. None for anything else.
fn go_render(template: &str, system: Option<&str>, prompt: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    let mut skipping = false;
    let value = |name: &str| match name {
        ".System" => Some(system.unwrap_or("")),
        ".Prompt" => Some(prompt),
        _ => None,
    };
    loop {
        let Some(open) = rest.find("{{") else {
            if !skipping {
                out.push_str(rest);
            }
            return Some(out);
        };
        if !skipping {
            out.push_str(&rest[..open]);
        }
        let close = rest[open..].find("}}")? + open;
        let action = rest[open + 2..close].trim();
        rest = &rest[close + 2..];
        if action == ".Response" {
            return (!skipping).then_some(out);
        } else if let Some(cond) = action.strip_prefix("if ") {
            if skipping {
                return None;
            }
            skipping = value(cond.trim())?.is_empty();
        } else if action == "end" {
            skipping = false;
        } else if !skipping {
            out.push_str(value(action)?);
        }
    }
}

/// The Modelfile: `FROM base`, `ADAPTER adapter` (a path relative to the Modelfile's folder,
/// as Ollama resolves it), and, where `chat` was verified against the base's template, its Go
/// `TEMPLATE`, `stop` tokens and default `SYSTEM`. `has_template`: whether the base has a chat
/// template at all (for the comment when none is written).
pub fn modelfile(base: &str, adapter: &str, chat: Option<&Chat>, has_template: bool) -> String {
    let mut out = String::from(
        "# Written by webqlora: the base model and the fine-tuned LoRA adapter.\n\
         # ollama create NAME -f Modelfile && ollama run NAME\n",
    );
    out.push_str(&format!("FROM {base}\n"));
    out.push_str(&format!("ADAPTER {adapter}\n"));
    match chat {
        Some(chat) => {
            out.push_str(&format!(
                "# The base's chat template ({}) as a Go template: it renders the same text.\n",
                chat.format.name()
            ));
            out.push_str(&format!(
                "TEMPLATE \"\"\"{}\"\"\"\n",
                chat.format.template()
            ));
            if let Some(system) = &chat.default_system {
                out.push_str(&format!("SYSTEM \"\"\"{system}\"\"\"\n"));
            }
            for stop in chat.format.stops() {
                out.push_str(&format!("PARAMETER stop \"{stop}\"\n"));
            }
        }
        None if has_template => out.push_str(
            "# The base's chat template has no Go form webqlora can check: Ollama reads it from\n\
             # the GGUF.\n",
        ),
        None => out.push_str("# The base has no chat template: prompts are used as given.\n"),
    }
    out
}

/// Whether `path` can be written as a Modelfile value as is: Ollama takes the rest of the
/// instruction's line, and would read a newline, surrounding spaces or quotes differently.
pub fn path_fits(path: &str) -> bool {
    !path.is_empty()
        && !path.contains(['\n', '\r', '"'])
        && path.trim() == path
        && !path.contains("\"\"\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2's template (ChatML with a default system message), Qwen2.5-style ChatML,
    /// Llama 3's and Gemma 3's, as their GGUFs ship them (abridged where they branch on tools).
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    const LLAMA3: &str = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
    const GEMMA3: &str = "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}";
    /// A ChatML template that writes something the Go form does not (a date line).
    const CHATML_OTHER: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\nDate: today\n' + message['content'] + '<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn render(jinja: &'static str) -> impl Fn(&[Message]) -> Option<String> {
        move |m| crate::tokenizer::chat::render(jinja, m, true, Some("<bos>"), Some("<eos>")).ok()
    }

    #[test]
    fn formats_are_recognized_by_their_markers() {
        assert_eq!(ChatFormat::of(CHATML), Some(ChatFormat::ChatMl));
        assert_eq!(ChatFormat::of(LLAMA3), Some(ChatFormat::Llama3));
        assert_eq!(ChatFormat::of(GEMMA3), Some(ChatFormat::Gemma));
        assert_eq!(ChatFormat::of("{{ messages }}"), None);
    }

    #[test]
    fn a_go_template_is_written_only_where_it_renders_what_the_jinja_does() {
        let bos = Some("<bos>");
        for (jinja, format) in [
            (CHATML, ChatFormat::ChatMl),
            (LLAMA3, ChatFormat::Llama3),
            (GEMMA3, ChatFormat::Gemma),
        ] {
            let chat = verified_chat(jinja, &render(jinja), bos);
            assert_eq!(
                chat,
                Some(Chat {
                    format,
                    default_system: None
                }),
                "{jinja}"
            );
        }
        let smol = verified_chat(SMOLLM2, &render(SMOLLM2), bos).unwrap();
        assert_eq!(
            smol.default_system.as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        assert_eq!(
            verified_chat(CHATML_OTHER, &render(CHATML_OTHER), bos),
            None
        );
        assert_eq!(verified_chat(CHATML, &|_| None, bos), None);
    }

    #[test]
    fn a_modelfile_names_base_adapter_template_and_stops() {
        let chat = verified_chat(SMOLLM2, &render(SMOLLM2), None).unwrap();
        let m = modelfile("/m/base.gguf", "./adapter.gguf", Some(&chat), true);
        assert!(
            m.contains("\nFROM /m/base.gguf\nADAPTER ./adapter.gguf\n"),
            "{m}"
        );
        assert!(
            m.contains("TEMPLATE \"\"\"{{ if .System }}<|im_start|>system"),
            "{m}"
        );
        assert!(
            m.contains("SYSTEM \"\"\"You are a helpful AI assistant named SmolLM"),
            "{m}"
        );
        assert!(m.contains("PARAMETER stop \"<|im_end|>\"\n"), "{m}");
        let plain = modelfile("/m/base.gguf", "./adapter.gguf", None, false);
        assert!(
            !plain.contains("TEMPLATE") && !plain.contains("PARAMETER"),
            "{plain}"
        );
        assert!(!path_fits("a\nb") && !path_fits(" a") && path_fits("/a b/c.gguf"));
    }
}
