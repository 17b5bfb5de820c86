//! A throwaway PostgreSQL server for integration tests: a cluster made with
//! `initdb` in a temporary directory, a server on a free port on 127.0.0.1,
//! one database, and its URL. Tests can stop it, start it again on the same
//! data and port, or kill it (SIGKILL, as in a crash) to check what survives.
//!
//! The server binaries (`initdb`, `pg_ctl`, `postgres`) are looked up on
//! `PATH`, then in `/usr/lib/postgresql/*/bin` (Debian's layout), newest
//! version first. Without them, [`TempPostgres::start`] says to install
//! Debian's `postgresql` package, which `scripts/test.sh` installs.
//!
//! The cluster keeps PostgreSQL's durability defaults (fsync, synchronous
//! commit, full page writes): a test that kills the server and checks what
//! survived would prove nothing without them. Authentication is `trust`,
//! reachable only on loopback and on a unix socket inside the temporary
//! directory.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI and
//! containers do), `initdb`, `postgres` and `pg_ctl` run with the uid and gid
//! of the `postgres` system user (the Debian package creates it), and the
//! temporary directory, made under `/tmp` so that user can reach it, is
//! handed to that user with `chown`.
//!
//! The readiness check and the database creation speak PostgreSQL's wire
//! protocol directly (startup, simple query), so no client binary is needed;
//! [`TempPostgres::simple_query`] offers the same to tests.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The superuser the cluster is made with.
pub const USER: &str = "aegis";
/// The database created for the test.
pub const DATABASE: &str = "aegis";

/// Where Debian installs each major version's server binaries.
const DEBIAN_LIB: &str = "/usr/lib/postgresql";
const SERVER_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
/// How long a start (including crash recovery) may take.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
/// SQLSTATE 57P03: the server is starting up or recovering.
const CANNOT_CONNECT_NOW: &str = "57P03";

/// A running (or stopped) PostgreSQL server in a temporary directory, stopped
/// and removed on drop.
pub struct TempPostgres {
    bin: PathBuf,
    port: u16,
    /// uid and gid the server runs as when the tests run as root.
    run_as: Option<(u32, u32)>,
    server: Option<Child>,
    dir: tempfile::TempDir,
}

impl TempPostgres {
    /// Makes a cluster, starts the server, waits until it accepts
    /// connections and creates the database [`DATABASE`].
    pub fn start() -> io::Result<TempPostgres> {
        let path = std::env::var_os("PATH");
        let bin = find_bin_dir(path.as_deref(), Path::new(DEBIAN_LIB))?;
        let run_as = if running_as_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        let dir = match run_as {
            // The postgres user must be able to reach the directory; $TMPDIR
            // may be under root's home.
            Some(_) => tempfile::Builder::new()
                .prefix("aegis-pg-")
                .tempdir_in("/tmp")?,
            None => tempfile::Builder::new().prefix("aegis-pg-").tempdir()?,
        };
        fs::create_dir(dir.path().join("sock"))?;
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), Some(uid), Some(gid))?;
            chown(dir.path().join("sock"), Some(uid), Some(gid))?;
        }
        let mut pg = TempPostgres {
            bin,
            port: free_port()?,
            run_as,
            server: None,
            dir,
        };
        pg.initdb()?;
        pg.spawn_until_ready()?;
        let mut conn = Conn::open(pg.port, "postgres")?;
        conn.query(&format!("CREATE DATABASE {DATABASE}"))?;
        Ok(pg)
    }

    /// `postgres://aegis@127.0.0.1:<port>/aegis`
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory holding the server binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Fast shutdown (`pg_ctl stop -m fast`): open sessions are cut,
    /// committed work is flushed. Doing nothing when already stopped.
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        let out = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "60"])
            .output()?;
        if !out.status.success() {
            let err = io::Error::other(format!(
                "`pg_ctl stop` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            self.server = Some(server);
            return Err(err);
        }
        server.wait()?;
        Ok(())
    }

    /// Starts the server again on the same data directory and port (stopping
    /// it first if it runs), and waits until it accepts connections: after
    /// [`TempPostgres::kill`] that includes crash recovery.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.spawn_until_ready()
    }

    /// SIGKILL to the postmaster, as in a crash: no shutdown checkpoint.
    /// Doing nothing when already stopped.
    pub fn kill(&mut self) -> io::Result<()> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        server.kill()?;
        server.wait()?;
        Ok(())
    }

    /// Runs `sql` (one or more statements) in [`DATABASE`] over a fresh
    /// connection and returns the rows of the last result as text, `None`
    /// for NULL.
    pub fn simple_query(&self, sql: &str) -> io::Result<Vec<Vec<Option<String>>>> {
        Conn::open(self.port, DATABASE)?.query(sql)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        // The server user may not be allowed into the caller's directory.
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn initdb(&self) -> io::Result<()> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", USER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "`initdb` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    /// Spawns the postmaster and polls until a connection gets through the
    /// startup handshake.
    fn spawn_until_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log_start = fs::metadata(self.log_path()).map_or(0, |m| m.len());
            self.spawn()?;
            match self.wait_ready(deadline) {
                Ok(()) => return Ok(()),
                Err(Early::Exited(status)) => {
                    let log = self.log_since(log_start);
                    // Backends of a killed postmaster notice its death and
                    // exit within moments; until then they hold the old
                    // shared memory and a new postmaster refuses to start.
                    if log.contains("pre-existing shared memory block") && Instant::now() < deadline
                    {
                        thread::sleep(POLL);
                        continue;
                    }
                    return Err(io::Error::other(format!(
                        "`postgres` exited during startup ({status}): {}",
                        log.trim()
                    )));
                }
                Err(Early::Timeout(last)) => {
                    let _ = self.kill();
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "`postgres` did not accept connections on 127.0.0.1:{} within {}s \
                             (last error: {last}); its log: {}",
                            self.port,
                            READY_TIMEOUT.as_secs(),
                            self.log_since(log_start).trim()
                        ),
                    ));
                }
                Err(Early::Io(e)) => return Err(e),
            }
        }
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path().join("sock"))
            .args(["-c", "listen_addresses=127.0.0.1"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.server = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self, deadline: Instant) -> Result<(), Early> {
        loop {
            if let Some(server) = self.server.as_mut() {
                if let Some(status) = server.try_wait().map_err(Early::Io)? {
                    self.server = None;
                    return Err(Early::Exited(status.to_string()));
                }
            }
            let last = match Conn::open(self.port, "postgres") {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(Early::Timeout(last.to_string()));
            }
            thread::sleep(POLL);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server log from byte `start` on, at most its last 4000 bytes.
    fn log_since(&self, start: u64) -> String {
        let text = fs::read(self.log_path()).unwrap_or_default();
        let start = usize::try_from(start).unwrap_or(0);
        let from = start.max(text.len().saturating_sub(4000));
        String::from_utf8_lossy(text.get(from..).unwrap_or_default()).into_owned()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if self.stop().is_err() {
            let _ = self.kill();
        }
    }
}

/// Why a start did not become ready.
enum Early {
    Exited(String),
    Timeout(String),
    Io(io::Error),
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: on `path` (a
/// `PATH` value; symlinks followed to the real directory), else the newest
/// `<lib>/<version>/bin`.
pub fn find_bin_dir(path: Option<&OsStr>, lib: &Path) -> io::Result<PathBuf> {
    let has_all = |dir: &Path| SERVER_BINARIES.iter().all(|b| dir.join(b).is_file());
    for dir in path.map(std::env::split_paths).into_iter().flatten() {
        let initdb = dir.join("initdb");
        if !initdb.is_file() {
            continue;
        }
        // Distributions link a few binaries into /usr/bin or /usr/local/bin;
        // the others sit next to the link's target.
        if let Some(real) = fs::canonicalize(&initdb)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            if has_all(&real) {
                return Ok(real);
            }
        }
        if has_all(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.into_iter().rev().find(|(_, dir)| has_all(dir)) {
        return Ok(dir);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`) on PATH or in \
             `{}/*/bin`: install Debian's `postgresql` package \
             (`apt-get install postgresql`)",
            lib.display()
        ),
    ))
}

/// Whether the effective uid is 0, from `/proc/self/status`.
fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            // Real, effective, saved, filesystem.
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// uid and gid of the `postgres` user, from `/etc/passwd`.
fn postgres_user() -> io::Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != "postgres" {
                return None;
            }
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((uid, gid))
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "the tests run as root, which PostgreSQL refuses, and there is no `postgres` \
                 user to run it as: install Debian's `postgresql` package, which creates it",
            )
        })
}

/// A port nobody listens on right now.
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The smallest client of PostgreSQL's wire protocol (version 3.0) that
/// gets through a trust-authenticated startup and runs simple queries.
struct Conn {
    stream: TcpStream,
}

impl Conn {
    fn open(port: u16, database: &str) -> io::Result<Conn> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut conn = Conn { stream };
        let mut body = 196_608_u32.to_be_bytes().to_vec(); // protocol 3.0
        for (key, value) in [
            ("user", USER),
            ("database", database),
            ("client_encoding", "UTF8"),
        ] {
            body.extend_from_slice(key.as_bytes());
            body.push(0);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        conn.send(None, &body)?;
        loop {
            let (tag, body) = conn.receive()?;
            match tag {
                b'R' if body.get(..4) == Some(&[0, 0, 0, 0]) => {} // AuthenticationOk
                b'R' => {
                    return Err(io::Error::other(
                        "the server asks for a password; the test cluster uses trust",
                    ))
                }
                b'E' => return Err(server_error(&body)),
                b'Z' => return Ok(conn),
                _ => {} // parameter status, backend key data, notices
            }
        }
    }

    fn query(&mut self, sql: &str) -> io::Result<Vec<Vec<Option<String>>>> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.send(Some(b'Q'), &body)?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.receive()?;
            match tag {
                b'T' => rows.clear(), // a new result set: keep the last one
                b'D' => rows.push(data_row(&body)?),
                b'E' => error = Some(server_error(&body)),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    fn send(&mut self, tag: Option<u8>, body: &[u8]) -> io::Result<()> {
        let len = u32::try_from(body.len() + 4)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
        let mut msg = Vec::with_capacity(body.len() + 5);
        msg.extend(tag);
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(body);
        self.stream.write_all(&msg)
    }

    fn receive(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut head = [0_u8; 5];
        self.stream.read_exact(&mut head)?;
        let [tag, a, b, c, d] = head;
        let len = u32::from_be_bytes([a, b, c, d]);
        if !(4..=1 << 26).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad message length {len} from the server"),
            ));
        }
        let mut body = vec![0; (len - 4) as usize];
        self.stream.read_exact(&mut body)?;
        Ok((tag, body))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.send(Some(b'X'), &[]); // Terminate
    }
}

/// The columns of a DataRow message as text.
fn data_row(body: &[u8]) -> io::Result<Vec<Option<String>>> {
    let mut rest = body;
    let count = u16::from_be_bytes(take(&mut rest)?);
    let mut columns = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = i32::from_be_bytes(take(&mut rest)?);
        columns.push(match usize::try_from(len) {
            Ok(len) => Some(String::from_utf8_lossy(take_slice(&mut rest, len)?).into_owned()),
            Err(_) => None, // -1: NULL
        });
    }
    Ok(columns)
}

fn take<const N: usize>(rest: &mut &[u8]) -> io::Result<[u8; N]> {
    let mut out = [0; N];
    out.copy_from_slice(take_slice(rest, N)?);
    Ok(out)
}

fn take_slice<'a>(rest: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
    let (head, tail) = rest
        .split_at_checked(n)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed data row"))?;
    *rest = tail;
    Ok(head)
}

/// An ErrorResponse as an error: "message (SQLSTATE)".
fn server_error(body: &[u8]) -> io::Error {
    let mut message = "";
    let mut code = "";
    for field in body.split(|b| *b == 0) {
        if let Some((kind, value)) = field.split_first() {
            let value = std::str::from_utf8(value).unwrap_or("");
            match kind {
                b'M' => message = value,
                b'C' => code = value,
                _ => {}
            }
        }
    }
    let kind = if code == CANNOT_CONNECT_NOW {
        io::ErrorKind::ConnectionRefused
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, format!("the server says: {message} ({code})"))
}
