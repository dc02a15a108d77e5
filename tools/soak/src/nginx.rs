//! The nginx under test: its own prefix directory and configuration, started in its own
//! process group, reloaded with `nginx -s reload`, workers found and killed by pid, memory read
//! from /proc, and stopped (QUIT, then TERM, then KILL of the group) when the soak ends.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    pub binary: PathBuf,
    pub prefix: PathBuf,
    pub child: Option<Child>,
    pub master: u32,
}

pub struct Settings<'a> {
    pub module: &'a Path,
    pub workers: u32,
    pub port: u16,
    pub origin_port: u16,
    pub segment: &'a str,
    pub max_object: &'a str,
    pub build_threads: u32,
}

pub fn write_config(prefix: &Path, s: &Settings) -> std::io::Result<()> {
    let p = prefix.display();
    // `user root` only when we are root: workers must read the prefix (0700 temp dir).
    let user = if unsafe_geteuid() == 0 {
        "user root;\n"
    } else {
        ""
    };
    let conf = format!(
        r#"# Written by the pagespeed soak (tools/soak): one cached, variant-building location in
# front of the soak's origin, the purge API and the status page.
{user}pid {p}/nginx.pid;
error_log {p}/error.log notice;
load_module {module};
worker_processes {workers};
events {{ worker_connections 2048; }}
http {{
    access_log off;
    client_body_temp_path {p}/client_body_temp;
    proxy_temp_path {p}/proxy_temp;
    fastcgi_temp_path {p}/fastcgi_temp;
    uwsgi_temp_path {p}/uwsgi_temp;
    scgi_temp_path {p}/scgi_temp;
    pagespeed_cache_path {p}/cache.bin size={segment} max_object={max_object};
    pagespeed_build_threads {threads};

    server {{
        listen 127.0.0.1:{port} reuseport;
        server_name localhost;
        keepalive_requests 500;
        add_header X-Worker $pid always;
        add_header X-Cache-Status $pagespeed_cache_status always;

        location / {{
            pagespeed_cache on;
            pagespeed_variants webp avif resize save-data gzip br;
            proxy_pass http://127.0.0.1:{origin};
            proxy_read_timeout 20s;
        }}
        location = /purge {{ pagespeed_purge; }}
        location = /status {{ pagespeed_status; }}
    }}
}}
"#,
        module = s.module.display(),
        workers = s.workers,
        segment = s.segment,
        max_object = s.max_object,
        threads = s.build_threads,
        port = s.port,
        origin = s.origin_port,
    );
    std::fs::write(prefix.join("nginx.conf"), conf)
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

impl Nginx {
    /// Starts nginx in the foreground (`daemon off`) in a process group of its own, so a
    /// Ctrl-C of the soak reaches only the soak, which then stops nginx in order.
    pub fn start(binary: &Path, prefix: &Path, addr: SocketAddr) -> Result<Nginx, String> {
        let mut cmd = Command::new(binary);
        cmd.arg("-p")
            .arg(format!("{}/", prefix.display()))
            .arg("-c")
            .arg("nginx.conf")
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-g")
            .arg("daemon off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(prefix.join("stderr.log")).map_err(|e| e.to_string())?,
            ))
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe. If the soak dies without stopping nginx, the master gets
        // SIGTERM (a fast shutdown) instead of running on.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let master = child.id();
        let mut n = Nginx {
            binary: binary.to_path_buf(),
            prefix: prefix.to_path_buf(),
            child: Some(child),
            master,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(c) = n.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    n.child = None;
                    return Err(format!(
                        "nginx exited during startup ({st}); see {}",
                        prefix.join("error.log").display()
                    ));
                }
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && !n.workers().is_empty()
            {
                return Ok(n);
            }
            if Instant::now() > deadline {
                n.stop();
                return Err("nginx did not start accepting within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `nginx -s reload`, as an operator runs it.
    pub fn reload(&self) -> Result<(), String> {
        let out = Command::new(&self.binary)
            .arg("-p")
            .arg(format!("{}/", self.prefix.display()))
            .arg("-c")
            .arg("nginx.conf")
            .arg("-s")
            .arg("reload")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nginx -s reload: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Children of the master that are workers; shutting-down workers of an older
    /// configuration too when `old` is set.
    pub fn worker_pids(&self, old: bool) -> Vec<u32> {
        children(self.master)
            .into_iter()
            .filter(|&p| {
                let c = cmdline(p);
                c.contains("worker process") && (old || !c.contains("shutting down"))
            })
            .collect()
    }

    pub fn workers(&self) -> Vec<u32> {
        self.worker_pids(false)
    }

    /// QUIT (graceful), then TERM, then KILL of the whole group; waits for the master.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        for (sig, secs) in [(libc::SIGQUIT, 20), (libc::SIGTERM, 5), (libc::SIGKILL, 5)] {
            // SAFETY: signalling our own child (or its group) by pid; no memory involved.
            unsafe {
                if sig == libc::SIGKILL {
                    libc::kill(-pid, sig);
                } else {
                    libc::kill(pid, sig);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("soak: nginx master {pid} still running after signal {sig}");
        }
        let _ = child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The process state letter from /proc/PID/stat (`Z` for a zombie), if it exists.
pub fn state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Resident memory of a process in KiB: (anonymous, total).
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("RssAnon:")?, field("VmRSS:")?))
}
