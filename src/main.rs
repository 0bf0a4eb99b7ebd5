//! The `webqlora` command line.

mod cli;

fn main() {
    ignore_file_size_signal();
    if let Err(e) = cli::run() {
        eprintln!("error: {}", message(&e));
        std::process::exit(1);
    }
}

/// Past a file-size limit (`ulimit -f`) the kernel sends SIGXFSZ, which kills the process
/// without a word; ignored, the write fails with EFBIG instead and the save's error handling
/// says which file failed and that the last whole adapter and checkpoint are kept.
fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: installs the ignore disposition for one signal; no handler code runs.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// The error and its causes on one line, each cause once: most of our errors already show
/// their cause (`path: No such file or directory`), which `{:#}` would print a second time.
fn message(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_shown_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io).context("x.json: no such file");
        assert_eq!(super::message(&e), "x.json: no such file");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::message(&e), "outer: inner");
    }
}
