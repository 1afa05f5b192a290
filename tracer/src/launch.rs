//! Launch mode: start the command stopped, let the dynamic loader map libc and libpython, and
//! hand it over before a single line of Python has run. The child is held with ptrace only
//! during that start-up; it runs untraced by ptrace afterwards.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};

use anyhow::{Context, Result};
use nix::sys::ptrace;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::elf::ElfImage;
use crate::error::user_error;
use crate::procfs;
use crate::report::CommandEnd;

/// A child stopped after its shared libraries are mapped, before its interpreter runs.
pub struct Launched {
    pub child: Child,
    pub pid: u32,
}

/// Syscall stops to wait at most for libc and the interpreter to be mapped.
const MAX_STARTUP_STOPS: usize = 20_000;

pub fn spawn_stopped(argv: &[String], python_malloc: bool) -> Result<Launched> {
    let (program, args) = argv.split_first().context("no command given")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    if python_malloc {
        cmd.env("PYTHONMALLOC", "malloc");
    }
    unsafe {
        cmd.pre_exec(|| ptrace::traceme().map_err(std::io::Error::from));
    }
    let child = cmd.spawn().map_err(|e| {
        user_error(format!("cannot start `{program}`: {e}"), "check the command after `--` (is it on PATH?)")
    })?;
    let pid = child.id();
    let launched = Launched { child, pid };
    let nix_pid = Pid::from_raw(pid as i32);
    match waitpid(nix_pid, None)? {
        WaitStatus::Stopped(_, _) => {}
        other => anyhow::bail!("`{program}` did not start as expected: {other:?}"),
    }
    let ready = wait_until_mapped(nix_pid);
    if let Err(e) = ready {
        let _ = ptrace::detach(nix_pid, None);
        return Err(e);
    }
    Ok(launched)
}

/// `arch_prctl` and `set_tid_address`: the loader sets up the main thread once every start-up
/// library is mapped.
const LOADER_DONE_SYSCALLS: [u64; 2] = [158, 218];

/// Lets the child run syscall by syscall until libc and the object holding `_PyRuntime` are
/// mapped, or until the loader has mapped everything it will (a non-Python command, which the
/// caller then reports).
fn wait_until_mapped(pid: Pid) -> Result<()> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let exe_has_runtime = exe
        .as_ref()
        .and_then(|p| ElfImage::open(&procfs::in_root(pid.as_raw() as u32, &p.display().to_string())).ok())
        .map(|e| e.symbol("_PyRuntime").is_some())
        .unwrap_or(false);
    for _ in 0..MAX_STARTUP_STOPS {
        let maps = procfs::parse_maps(&std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default());
        let has = |prefix: &str| {
            maps.iter()
                .any(|m| m.path.as_deref().is_some_and(|p| p.rsplit('/').next().unwrap_or(p).starts_with(prefix)))
        };
        let libc = has("libc.so") || has("libc-");
        if libc && (exe_has_runtime || has("libpython")) {
            return Ok(());
        }
        if let Ok(regs) = ptrace::getregs(pid) {
            if LOADER_DONE_SYSCALLS.contains(&regs.orig_rax) {
                return Ok(());
            }
        }
        ptrace::syscall(pid, None)?;
        match waitpid(pid, None)? {
            WaitStatus::Exited(_, code) => anyhow::bail!("the command exited during start-up (status {code})"),
            WaitStatus::Signaled(_, sig, _) => anyhow::bail!("the command was killed during start-up ({sig})"),
            _ => {}
        }
    }
    anyhow::bail!("the command did not finish loading its libraries")
}

impl Launched {
    /// Lets the child go: it runs on untraced by ptrace (the uprobes stay).
    pub fn release(&self) -> Result<()> {
        ptrace::detach(Pid::from_raw(self.pid as i32), None).context("releasing the launched command")
    }

    /// Ends a child the tracer refused (still stopped, before a line of its program ran): it
    /// must not run on untraced and orphaned next to whatever the caller does next.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// How the child ended, if it has (it is reaped then).
    pub fn ended(&mut self) -> Option<CommandEnd> {
        self.child.try_wait().ok().flatten().map(command_end)
    }
}

/// An exit status as the report states it.
pub fn command_end(status: ExitStatus) -> CommandEnd {
    match (status.code(), status.signal()) {
        (Some(code), _) => CommandEnd::Exited { status: code },
        (None, Some(signal)) => CommandEnd::Killed {
            signal,
            name: nix::sys::signal::Signal::try_from(signal)
                .map_or_else(|_| format!("signal {signal}"), |s| s.to_string()),
            core_dumped: status.core_dumped(),
        },
        (None, None) => CommandEnd::Exited { status: 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_as_the_shell_does() {
        let exited = command_end(ExitStatus::from_raw(1 << 8));
        assert_eq!(exited, CommandEnd::Exited { status: 1 });
        assert_eq!(exited.shell_status(), 1);
        assert_eq!(exited.to_string(), "exited with status 1");
        let segv = command_end(ExitStatus::from_raw(11 | 0x80));
        assert_eq!(segv.shell_status(), 139);
        assert_eq!(segv.to_string(), "killed by SIGSEGV (signal 11, core dumped)");
        let killed = command_end(ExitStatus::from_raw(9));
        assert_eq!(killed.shell_status(), 137);
        assert_eq!(CommandEnd::StillRunning { pid: 7 }.shell_status(), 0);
    }
}
