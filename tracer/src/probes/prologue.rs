//! Where in a function an entry-only probe goes. The kernel emulates a few x86 instruction
//! kinds at a probe (push, jmp/call/jcc); on any other it single-steps a copy out of line, a
//! second trap that costs ~6 times more on a VM (docs/probes.md "Where a probe sits").

/// Entry-only probes move past a leading instruction the kernel would have to single-step
/// (`endbr64`, `test %rdi,%rdi`) onto the next one, which it emulates: one trap instead of
/// two. Such instructions change neither the argument registers nor the control flow.
/// Functions with a return probe keep their entry probe at +0, where the return probe's
/// breakpoint already is.
pub fn cheap_probe_offset(code: &[u8]) -> u64 {
    let mut at = 0usize;
    for _ in 0..2 {
        let rest = &code[at.min(code.len())..];
        if rest.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
            at += 4; // endbr64
        } else if rest.len() >= 3 && rest[0] == 0x48 && rest[1] == 0x85 && rest[2] == 0xff {
            at += 3; // test %rdi,%rdi
        } else {
            break;
        }
    }
    let next = &code[at.min(code.len())..];
    let emulated = matches!(next.first(), Some(0x50..=0x57 | 0x70..=0x7f | 0xe8 | 0xe9 | 0xeb))
        || (next.len() >= 2 && next[0] == 0x41 && (0x50..=0x57).contains(&next[1]))
        || (next.len() >= 2 && next[0] == 0x0f && (0x80..=0x8f).contains(&next[1]));
    if emulated {
        at as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prologues() {
        // glibc 2.36 free: test %rdi,%rdi; je ...
        assert_eq!(cheap_probe_offset(&[0x48, 0x85, 0xff, 0x74, 0x20]), 3);
        // with endbr64 first
        assert_eq!(cheap_probe_offset(&[0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x85, 0xff, 0x0f, 0x84, 0, 0, 0, 0]), 7);
        // malloc: push %r12 is emulated already
        assert_eq!(cheap_probe_offset(&[0x41, 0x54, 0x55]), 0);
        // mov %rdi,%rbx after test: not emulated, stay at the entry
        assert_eq!(cheap_probe_offset(&[0x48, 0x85, 0xff, 0x48, 0x89, 0xfb]), 0);
        assert_eq!(cheap_probe_offset(&[]), 0);
    }
}
