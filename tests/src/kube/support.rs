//! Plumbing for [`super::KubeApiServer`]: its processes, keys, ports and the sweep of what a
//! killed test run left behind.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use rand::Rng;

use super::{DIR_PREFIX, POLL, STOP_GRACE};
use crate::cmd;
use crate::error::{HarnessError, Result};
use crate::process::tail;

/// A control-plane process in its own process group, logging to a file.
pub(super) struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub(super) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Daemon> {
        // Append: a restarted API server keeps the previous run's log above its own.
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| HarnessError::file("opening", log, e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::file("duplicating", log, e))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                command: format!("{} {}", program.display(), args.join(" ")),
                source,
            })?;
        Ok(Daemon {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    pub(super) fn log_text(&self) -> String {
        std::fs::read(&self.log).map_or_else(
            |e| format!("(cannot read {}: {e})", self.log.display()),
            |bytes| String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    pub(super) fn fail_if_exited(&mut self, what: &str) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(HarnessError::ProcessExited {
                name: self.name.to_string(),
                status: status.to_string(),
                what: what.to_string(),
                log_tail: tail(&self.log_text()),
            }),
            Err(source) => Err(HarnessError::Spawn {
                command: format!("waiting for {}", self.name),
                source,
            }),
        }
    }

    pub(super) fn timeout(&self, what: &str, timeout: Duration) -> HarnessError {
        HarnessError::WaitTimeout {
            what: format!("{what} ({})", self.name),
            timeout,
            log_tail: tail(&self.log_text()),
        }
    }

    /// SIGTERM the group, SIGKILL whatever is left after the grace period.
    pub(super) fn stop(&mut self) -> Option<ExitStatus> {
        let group = Pid::from_raw(self.child.id() as i32);
        if let Ok(None) = self.child.try_wait() {
            let _ = killpg(group, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = self.child.try_wait() {
                    let _ = killpg(group, Signal::SIGKILL);
                    return Some(status);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = killpg(group, Signal::SIGKILL);
        self.child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The self-signed CA, the serving certificate for 127.0.0.1 and the in-cluster names, and the
/// service-account signing key, all with openssl (no crypto crate needed in the harness).
pub(super) fn make_pki(pki: &Path) -> Result<()> {
    let ext =
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
               extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,\
               DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,\
               DNS:kubernetes.default.svc.cluster.local\n";
    write_file(&pki.join("apiserver.ext"), ext)?;
    // Space-separated: no argument here contains a space.
    let steps = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=ambit-test-kube-ca",
        "req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver",
        "x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile apiserver.ext -out apiserver.crt",
        "genrsa -out sa.key 2048",
        "rsa -in sa.key -pubout -out sa.pub",
    ];
    for args in steps {
        cmd::run(
            Command::new("openssl")
                .args(args.split(' '))
                .current_dir(pki),
        )?;
    }
    Ok(())
}

/// /dev/shm when it is a directory (tmpfs: etcd fsyncs every write), else the temp dir.
pub(super) fn temp_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Remove what a test process killed before its Drop ran left behind: a dir whose owner lock
/// nobody holds, and the processes still running from it (their arguments name the dir).
pub(super) fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        // No lock file yet means it is being created right now: leave it.
        let Ok(lock) = File::open(dir.join("owner.lock")) else {
            continue;
        };
        let Ok(_held) = Flock::lock(lock, FlockArg::LockExclusiveNonblock) else {
            continue; // a live server
        };
        let needle = dir.to_string_lossy().into_owned();
        for pid in pids_mentioning(&needle) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Processes whose command line contains `needle`.
pub(super) fn pids_mentioning(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
        })
        .collect()
}

/// Three distinct loopback ports that were free a moment ago.
pub(super) fn free_ports() -> Result<[u16; 3]> {
    let bind = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| HarnessError::file("binding", "127.0.0.1:0", e))
    };
    // All three bound at once, so they differ.
    let listeners = [bind()?, bind()?, bind()?];
    let mut ports = [0u16; 3];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(|e| HarnessError::file("reading the address of", "127.0.0.1:0", e))?
            .port();
    }
    Ok(ports)
}

/// `GET /health` on etcd's client port says `"health":"true"`.
pub(super) fn etcd_healthy(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, POLL) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.contains("\"health\":\"true\"")
}

pub(super) fn random_token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| HarnessError::file("writing", path, e))
}

pub(super) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub(super) fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}
