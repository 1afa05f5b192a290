//! Loading a page in a real headless Chromium (Debian's `chromium`; `cargo xtask test` installs
//! it): the DOM after the page's scripts ran, and what the page wrote to its console.

use std::path::PathBuf;
use std::process::Command;

/// A page as Chromium left it.
#[derive(Debug)]
pub struct Page {
    /// The DOM after load and `virtual_ms` of virtual time (scripts and timers ran).
    pub dom: String,
    /// The page's console messages, in order.
    pub console: Vec<String>,
}

impl Page {
    /// Console messages that report a failure (uncaught exceptions, failed imports).
    pub fn errors(&self) -> Vec<&String> {
        let bad = ["Uncaught", "Error", "error", "Failed", "Something went wrong"];
        self.console.iter().filter(|m| bad.iter().any(|b| m.contains(b))).collect()
    }
}

/// The Chromium on PATH, if any.
pub fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Loads `url` in a fresh headless Chromium with a `width`x`height` window.
pub fn load(browser: &std::path::Path, url: &str, width: u32, height: u32) -> Page {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("120")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={width},{height}"))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium {url}: {}\n{stderr}", out.status);
    // `[pid:tid:time:INFO:CONSOLE:188] "message", source: URL (188)`
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(|l| l.split_once("] ").map_or(l, |(_, m)| m).to_string())
        .collect();
    Page { dom: String::from_utf8_lossy(&out.stdout).into_owned(), console }
}
