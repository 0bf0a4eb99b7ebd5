//! Multiple-choice questions: the prompt the demo trains and scores with, and how an answer is
//! written (an index or a letter).

/// A question with its choices and the index of the right one.
#[derive(Clone, Debug, PartialEq)]
pub struct Mcq {
    pub question: String,
    pub choices: Vec<String>,
    pub answer: usize,
}

pub const LETTERS: &str = "ABCDEFGHIJ";

impl Mcq {
    /// `Question: {question}\nA. {c0}\nB. {c1}\n...\nAnswer:`
    pub fn prompt(&self) -> String {
        let mut text = format!("Question: {}\n", self.question);
        for (letter, choice) in LETTERS.chars().zip(&self.choices) {
            text.push_str(&format!("{letter}. {choice}\n"));
        }
        text.push_str("Answer:");
        text
    }

    /// What follows the prompt for choice `i`: its text (`" {choice}"`), or with
    /// `by_letter` its letter (`" B"`).
    pub fn continuation(&self, i: usize, by_letter: bool) -> String {
        if by_letter {
            format!(" {}", LETTERS.as_bytes()[i] as char)
        } else {
            format!(" {}", self.choices[i])
        }
    }

    /// Parse `answer` as an index into `choices` or a letter ("B", "b").
    pub fn parse_answer(answer: &serde_json::Value, choices: usize) -> Result<usize, String> {
        let index = match answer {
            serde_json::Value::Number(n) => n.as_u64().map(|i| i as usize),
            serde_json::Value::String(s) => {
                let s = s.trim();
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_alphabetic() => {
                        LETTERS.find(c.to_ascii_uppercase())
                    }
                    _ => s.parse().ok(),
                }
            }
            _ => None,
        };
        match index {
            Some(i) if i < choices => Ok(i),
            _ => Err(format!(
                "'answer' {answer} is not an index below {choices} or a letter A-{}",
                LETTERS.as_bytes()[choices.saturating_sub(1).min(9)] as char
            )),
        }
    }
}
