//! Chat templates: the Jinja text a model ships (tokenizer_config.json or GGUF
//! `tokenizer.chat_template`), rendered as transformers' `apply_chat_template` does: Python's
//! string methods (`startswith`, `split`, `strip` … which Qwen3's template calls) through
//! minijinja-contrib's pycompat, `raise_exception`, `bos_token` and `eos_token`. transformers'
//! `strftime_now` is not defined, so Llama 3.x templates write their own fallback date in the
//! system header: a data set encodes the same whatever the day.

use minijinja::{context, Environment, Error, ErrorKind};

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// The work one render may do (minijinja's fuel: one per instruction, one per 64 bytes of data
/// made, output included). Real templates spend a few hundred a message and the longest
/// record we read (8 MiB) some 10^5 in copies; a template that loops 10^10 times, or doubles
/// a string until memory runs out, stops here (at most ~256 MB made) with an error.
pub const TEMPLATE_FUEL: u64 = 4_000_000;

pub(crate) fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
) -> Result<String, Error> {
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    // transformers' templates call raise_exception('...') on bad conversations.
    env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template)?;
    env.get_template("chat")?.render(context! {
        messages => messages
            .iter()
            .map(|m| context! { role => &m.role, content => &m.content })
            .collect::<Vec<_>>(),
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token.unwrap_or(""),
        eos_token => eos_token.unwrap_or(""),
    })
}
