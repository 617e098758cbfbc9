//! The generated `~/.testcontainers.properties`, read by Java's own `java.util.Properties`
//! (what testcontainers-java loads it with), fresh and merged into an existing file.
//! Prints `SKIP` when no `java` (11 or later, for single-file source launch) is installed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run, skip, text, which};
use ferry_clientcfg::{Target, Upstream, WriteOptions, testcontainers};

const READER: &str = r#"
import java.io.FileInputStream;
import java.util.Properties;

public class ReadProps {
    public static void main(String[] args) throws Exception {
        for (String f : args) {
            Properties p = new Properties();
            try (FileInputStream in = new FileInputStream(f)) { p.load(in); }
            System.out.println(p.size() + " " + p.getProperty("hub.image.name.prefix"));
        }
    }
}
"#;

#[test]
fn java_properties_reads_the_testcontainers_prefix() {
    const TEST: &str = "java_properties_reads_the_testcontainers_prefix";
    let Some(java) = which("java") else {
        return skip(TEST, "java is not installed");
    };
    let t = Target::new(
        "http://127.0.0.1:5002",
        [Upstream::new("docker.io"), Upstream::new("ghcr.io")],
        Some("docker.io"),
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let merged = tempfile::tempdir().unwrap();
    let existing = merged.path().join(".testcontainers.properties");
    std::fs::write(
        &existing,
        "#Modified by Testcontainers\ntestcontainers.reuse.enable=true\nhub.image.name.prefix=old/\n",
    )
    .unwrap();
    for root in [fresh.path(), merged.path()] {
        testcontainers(&t)
            .unwrap()
            .write(root, &WriteOptions::default())
            .unwrap();
    }
    let src = fresh.path().join("ReadProps.java");
    std::fs::write(&src, READER).unwrap();
    let out = run(
        Command::new(java)
            .arg(&src)
            .arg(fresh.path().join(".testcontainers.properties"))
            .arg(&existing),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        ["1 127.0.0.1:5002/docker.io/", "2 127.0.0.1:5002/docker.io/"],
        "{}",
        text(&out)
    );
}
