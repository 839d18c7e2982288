//! Background processes of a command: the prefetcher of `wal-fetch`, the
//! archiver of `wal-push`.

/// Starts this command again, detached, with `flag` added: the same
/// arguments (so the same repository and settings) and environment, in
/// its own session, so that it outlives this process (not its server),
/// holding `lock`, its spool's lock, on descriptor 3, and no other
/// descriptor PostgreSQL may have left open. Not waited for: it ends by
/// itself.
pub fn start_detached(flag: &str, lock: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // Before a "--" that ends the options, if there is one.
    let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
    args.insert(at, flag.into());
    let mut command = std::process::Command::new(exe);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let lock_fd = lock.as_raw_fd();
    let target = pgark_engine::INHERITED_LOCK_FD;
    // SAFETY: only async-signal-safe calls (setsid, dup2, fcntl, a raw
    // close_range syscall) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if lock_fd == target {
                // dup2 onto itself would keep close-on-exec.
                if libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(lock_fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Close-on-exec rather than closed: the standard library's own
            // pipe that reports a failed exec must stay open until then.
            // Kernels before 5.11 lack the flag; Rust's own descriptors are
            // close-on-exec anyway.
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            libc::syscall(libc::SYS_close_range, target + 1, u32::MAX, CLOSE_RANGE_CLOEXEC);
            Ok(())
        });
    }
    command.spawn().map(drop)
}
