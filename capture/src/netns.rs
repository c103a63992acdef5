//! Network namespaces as owned file descriptors, and the only `unsafe` in Ambit.
//!
//! A pod's network namespace reaches us as a path (`/proc/PID/ns/net`, a bind
//! mount under `/var/run/netns/`) or as a file descriptor passed over a unix
//! socket (SCM_RIGHTS, by the `enroll` protocol). Holding the fd keeps the
//! namespace alive even after the pod's processes exit.
//!
//! [`NetNs::run_in`] never switches the *caller's* thread: `setns` is
//! per-thread, and a tokio worker that wandered into a pod's namespace would
//! silently create every later socket there. Instead a short-lived std thread
//! enters the namespace, runs the closure, and exits. Sockets keep the
//! namespace they were created in, so a listener created there keeps working
//! from any thread afterwards.
//!
//! [`NetNs::run_here`] is the fast path for the per-connection case (a socket
//! to dial out of a pod): the calling thread enters the namespace, runs a
//! short synchronous closure and comes back, all before it can run anything
//! else; if coming back ever failed the process aborts rather than go on in
//! the wrong namespace. A thread spawn costs several times more than the two
//! `setns` calls, and it would block a tokio worker just as long.
//!
//! `unsafe` is needed for exactly three things, all kept in this module:
//! adopting file descriptors the kernel installed for us via SCM_RIGHTS, the
//! `NS_GET_NSTYPE` ioctl that tells a network namespace fd from any other,
//! and registering an owned socket with tokio's `AsyncFd` (whose safe
//! constructor is deprecated because it cannot prove fd ownership).
#![allow(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

/// Why a network namespace could not be opened or entered.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error(
        "cannot open network namespace {path}: {source}; check that the pod sandbox still exists \
         and that this process runs as root on the host"
    )]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "{what} is not a network namespace ({reason}); pass /proc/PID/ns/net or a bind mount \
         such as /var/run/netns/NAME"
    )]
    NotNetNs { what: String, reason: String },
    #[error("cannot inspect network namespace fd: {0}")]
    Stat(nix::Error),
    #[error("cannot start a thread to enter network namespace {netns}: {source}")]
    Thread { netns: NetNsId, source: io::Error },
    #[error(
        "cannot enter network namespace {netns}: {source}; the process needs CAP_SYS_ADMIN \
         (run as root)"
    )]
    Setns { netns: NetNsId, source: nix::Error },
}

/// Identity of a network namespace: equal ids mean the same namespace, no
/// matter how it was opened. Displays like the kernel's `net:[INODE]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetNsId {
    pub dev: u64,
    pub inode: u64,
}

impl fmt::Display for NetNsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}]", self.inode)
    }
}

/// An open network namespace (owned fd).
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    id: NetNsId,
}

impl NetNs {
    /// Opens the namespace at `path` (`/proc/PID/ns/net`, `/var/run/netns/X`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetNsError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| NetNsError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::validate(OwnedFd::from(file), &path.display().to_string())
    }

    /// The namespace of the calling thread (usually the host's).
    pub fn current() -> Result<Self, NetNsError> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// Takes ownership of an fd that should refer to a network namespace,
    /// e.g. one received over SCM_RIGHTS. Rejects any other kind of fd.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, NetNsError> {
        Self::validate(fd, "the received file descriptor")
    }

    fn validate(fd: OwnedFd, what: &str) -> Result<Self, NetNsError> {
        let nstype = namespace_type(fd.as_fd()).map_err(|errno| NetNsError::NotNetNs {
            what: what.to_owned(),
            reason: match errno {
                nix::Error::ENOTTY | nix::Error::EINVAL => "not a namespace file".to_owned(),
                other => format!("NS_GET_NSTYPE failed: {other}"),
            },
        })?;
        if nstype != CloneFlags::CLONE_NEWNET.bits() {
            return Err(NetNsError::NotNetNs {
                what: what.to_owned(),
                reason: format!("namespace type {nstype:#x}, not CLONE_NEWNET"),
            });
        }
        let stat = nix::sys::stat::fstat(fd.as_fd()).map_err(NetNsError::Stat)?;
        let id = NetNsId {
            dev: stat.st_dev,
            inode: stat.st_ino,
        };
        Ok(Self { fd, id })
    }

    /// Identity for logs and dedup.
    pub fn id(&self) -> NetNsId {
        self.id
    }

    /// Inode number of the namespace (what `ls -l /proc/PID/ns/net` shows).
    pub fn inode(&self) -> u64 {
        self.id.inode
    }

    /// A second handle to the same namespace.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            fd: self.fd.try_clone()?,
            id: self.id,
        })
    }

    /// Runs `f` on a fresh thread that has entered this namespace and returns
    /// its result. The calling thread never changes namespace. Processes
    /// spawned by `f` start in this namespace too (a child inherits the
    /// namespaces of the thread that forks it).
    ///
    /// This blocks the caller while the thread runs; from async code call it
    /// inside `tokio::task::spawn_blocking` or accept the brief block (it is
    /// a thread spawn plus `f`). Thread-locals (tracing spans, the tokio
    /// runtime handle) are not carried over. A panic in `f` is re-raised here.
    pub fn run_in<F, R>(&self, f: F) -> Result<R, NetNsError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.fd.as_fd();
        let netns = self.id;
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(format!("netns-{}", netns.inode))
                .spawn_scoped(scope, move || {
                    nix::sched::setns(fd, CloneFlags::CLONE_NEWNET)?;
                    Ok(f())
                })
                .map_err(|source| NetNsError::Thread { netns, source })?;
            match handle.join() {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(source)) => Err(NetNsError::Setns { netns, source }),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// The caller's own namespace, opened once per thread (tokio workers live long).
fn home_netns() -> Result<BorrowedFd<'static>, NetNsError> {
    thread_local! {
        static HOME: std::cell::OnceCell<&'static NetNs> = const { std::cell::OnceCell::new() };
    }
    HOME.with(|home| {
        if let Some(netns) = home.get() {
            return Ok(netns.fd.as_fd());
        }
        // Leaked on purpose: one fd per thread, for the thread's (and usually the process's)
        // whole life; a 'static borrow keeps `run_here` free of lifetimes.
        let netns: &'static NetNs = Box::leak(Box::new(NetNs::current()?));
        let _ = home.set(netns);
        Ok(netns.fd.as_fd())
    })
}

/// Returns the thread to its own namespace when dropped, also while a panic unwinds.
struct ReturnHome(BorrowedFd<'static>);

impl Drop for ReturnHome {
    fn drop(&mut self) {
        if let Err(error) = nix::sched::setns(self.0, CloneFlags::CLONE_NEWNET) {
            // Going on would create later sockets inside a pod: stop instead.
            eprintln!("fatal: cannot return to the host network namespace: {error}");
            std::process::abort();
        }
    }
}

impl NetNs {
    /// Runs `f` on the calling thread while it is inside this namespace, then returns the
    /// thread to its own namespace. `f` must be short and synchronous (create a socket): the
    /// thread can run nothing else meanwhile, which is what makes this safe for tokio workers.
    pub fn run_here<F, R>(&self, f: F) -> Result<R, NetNsError>
    where
        F: FnOnce() -> R,
    {
        let home = home_netns()?;
        let netns = self.id;
        nix::sched::setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|source| NetNsError::Setns { netns, source })?;
        let _back = ReturnHome(home);
        Ok(f())
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<NetNs> for OwnedFd {
    fn from(netns: NetNs) -> OwnedFd {
        netns.fd
    }
}

/// `ioctl(fd, NS_GET_NSTYPE)`: the `CLONE_NEW*` flag of a namespace fd.
fn namespace_type(fd: BorrowedFd<'_>) -> Result<i32, nix::Error> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which
    // the borrow keeps open for the duration of the call.
    let ret = unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::NS_GET_NSTYPE) };
    if ret < 0 {
        Err(nix::Error::last())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of file descriptors that `recvmsg` just installed in this
/// process from an SCM_RIGHTS control message, so they are closed on drop.
///
/// Call it with the raw fds of one `ControlMessageOwned::ScmRights`, once,
/// right after `recvmsg` returns and before anything can fail, so that no
/// received fd leaks whatever the message turns out to contain.
pub(crate) fn adopt_scm_rights(raw: Vec<RawFd>) -> Vec<OwnedFd> {
    raw.into_iter()
        // SAFETY: the kernel created these descriptors for us while
        // delivering SCM_RIGHTS; nothing else in the process knows or owns
        // them, and this is the only place they are wrapped.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// Registers `socket` with the tokio reactor (must be non-blocking and
/// called inside a runtime).
pub(crate) fn register_async(
    socket: socket2::Socket,
) -> io::Result<tokio::io::unix::AsyncFd<socket2::Socket>> {
    // SAFETY: `socket` owns its fd and moves into the AsyncFd, which keeps
    // it open until the AsyncFd is dropped (it deregisters first). Our
    // callers never take the socket back out (`into_inner`) nor close or
    // replace the fd while registered.
    unsafe { tokio::io::unix::AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn rejects_a_regular_file() {
        let file = tempfile::tempfile().unwrap();
        let err = NetNs::from_fd(OwnedFd::from(file)).unwrap_err();
        assert!(matches!(err, NetNsError::NotNetNs { .. }), "{err}");
        assert!(err.to_string().contains("not a namespace file"), "{err}");
    }

    #[test]
    fn rejects_another_namespace_type() {
        match NetNs::open("/proc/self/ns/uts") {
            Err(NetNsError::NotNetNs { reason, .. }) => assert!(reason.contains("0x4000000")),
            Err(NetNsError::Open { .. }) => {} // no /proc access in this sandbox
            other => panic!("expected NotNetNs, got {other:?}"),
        }
    }

    #[test]
    fn missing_path_names_the_path() {
        let err = NetNs::open("/nonexistent/ns/net").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ns/net"), "{err}");
    }

    #[test]
    fn current_namespace_is_stable_across_handles_and_threads() {
        let a = NetNs::current().unwrap();
        let b = NetNs::open("/proc/self/ns/net").unwrap();
        assert_eq!(a.id(), b.id());
        // run_in into our own namespace: the thread sees the same id.
        let seen = a.run_in(|| NetNs::current().unwrap().id()).unwrap();
        assert_eq!(seen, a.id());
        assert_eq!(a.try_clone().unwrap().inode(), a.inode());
    }

    #[test]
    fn run_in_propagates_panics() {
        let ns = NetNs::current().unwrap();
        let result = std::panic::catch_unwind(|| ns.run_in(|| panic!("boom")));
        assert!(result.is_err());
    }
}
