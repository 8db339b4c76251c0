//! Thread kick: a no-op handler for SIGRTMIN so that a signal to one thread
//! makes its blocking `KVM_RUN` (or any blocking ioctl) return EINTR.
//! A handler is needed because an ignored signal is never delivered, and it
//! must be native code: JavaScript cannot run in signal context.
//!
//! Threads are named by kernel thread id and signalled with tgkill, not by
//! pthread_t and pthread_kill: a pthread_t is a pointer glibc follows, so a
//! wrong or stale one from JS crashes node, where a wrong tid is ESRCH.

use crate::errno::EINVAL;
use std::io;
use std::os::raw::c_int;
use std::sync::OnceLock;

/// glibc's struct sigaction on x86_64.
#[repr(C)]
struct SigAction {
    sa_handler: extern "C" fn(c_int),
    sa_mask: [u64; 16],
    sa_flags: c_int,
    sa_restorer: usize,
}

extern "C" {
    fn __libc_current_sigrtmin() -> c_int;
    fn sigaction(signum: c_int, act: *const SigAction, old: *mut SigAction) -> c_int;
    fn gettid() -> c_int;
    fn getpid() -> c_int;
    fn tgkill(tgid: c_int, tid: c_int, sig: c_int) -> c_int;
}

extern "C" fn on_kick(_: c_int) {}

static SIGNO: OnceLock<io::Result<c_int>> = OnceLock::new();

/// Installs the handler once per process; returns the signal number.
pub fn init() -> io::Result<c_int> {
    let r = SIGNO.get_or_init(|| {
        // SAFETY: plain libc calls; on_kick is async-signal-safe (does nothing).
        let signo = unsafe { __libc_current_sigrtmin() };
        // No SA_RESTART: the interrupted call must return EINTR, not resume.
        let act = SigAction { sa_handler: on_kick, sa_mask: [0; 16], sa_flags: 0, sa_restorer: 0 };
        if unsafe { sigaction(signo, &act, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(signo)
    });
    match r {
        Ok(s) => Ok(*s),
        Err(e) => Err(io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(EINVAL))),
    }
}

/// The calling thread's kernel id, for `kick`.
pub fn thread_self() -> u64 {
    // SAFETY: always succeeds.
    unsafe { gettid() as u64 }
}

/// Signals thread `tid` of this process; the kernel checks the id (ESRCH
/// once the thread is gone, unless the id was reused: then another thread
/// of ours gets a harmless EINTR).
pub fn kick(tid: c_int) -> io::Result<()> {
    let signo = init()?;
    // SAFETY: plain syscall wrapper; the kernel validates both ids.
    if unsafe { tgkill(getpid(), tid, signo) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_interrupts_a_blocking_call() {
        init().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tx.send(thread_self()).unwrap();
            // A pipe nobody writes: read blocks until the kick.
            let mut fds = [0 as c_int; 2];
            extern "C" {
                fn pipe(fds: *mut c_int) -> c_int;
                fn read(fd: c_int, buf: *mut u8, n: usize) -> isize;
            }
            let mut b = 0u8;
            unsafe {
                assert_eq!(pipe(fds.as_mut_ptr()), 0);
                let r = read(fds[0], &mut b, 1);
                (r, io::Error::last_os_error().raw_os_error())
            }
        });
        let tid = rx.recv().unwrap() as c_int;
        // The reader may not be blocked yet; kick until it returns.
        let mut n = 0;
        while !t.is_finished() {
            kick(tid).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
            n += 1;
            assert!(n < 400, "kick never interrupted the read");
        }
        let (r, errno) = t.join().unwrap();
        assert_eq!((r, errno), (-1, Some(4)), "read returns EINTR");
        assert_eq!(kick(tid).unwrap_err().raw_os_error(), Some(3), "a thread that is gone is ESRCH, not a crash");
    }

    #[test]
    fn ids_that_are_no_thread_of_ours_are_refused() {
        assert_eq!(kick(i32::MAX).unwrap_err().raw_os_error(), Some(3), "ESRCH");
        assert_eq!(kick(-1).unwrap_err().raw_os_error(), Some(22), "EINVAL");
    }
}
