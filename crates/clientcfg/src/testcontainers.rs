//! Testcontainers: `hub.image.name.prefix=<ferry host:port>/docker.io/` in
//! `~/.testcontainers.properties`, so the Docker Hub images tests start
//! (`redis:7`, `testcontainers/ryuk`) are pulled as `<ferry>/docker.io/redis:7`, which ferry
//! serves through its path prefix (`docker.io/redis` is `library/redis` there).
//!
//! Limits, from testcontainers-java's `PrefixingImageNameSubstitutor` (the other
//! implementations copy it): only images with no registry in their name are prefixed, so
//! `ghcr.io/...`, `quay.io/...` and even an explicit `docker.io/library/redis` are pulled
//! as written; images built from a Dockerfile or started by Docker Compose are not prefixed.
//! The pull itself is done by the Docker daemon, so a plain-HTTP ferry must be in its
//! `insecure-registries` (`ferry client-config docker` writes that). There is no direct
//! fallback to disable: a prefixed image only exists at ferry.

use crate::{Client, ClientConfig, Error, GeneratedFile, OnExisting, Target, is_docker_hub};

/// Where the file goes, relative to the home directory (`--write ~`).
pub const TESTCONTAINERS_PROPERTIES_PATH: &str = ".testcontainers.properties";

/// The property testcontainers reads (environment variable
/// `TESTCONTAINERS_HUB_IMAGE_NAME_PREFIX`).
const PREFIX_KEY: &str = "hub.image.name.prefix";

/// Generates `~/.testcontainers.properties` for Testcontainers.
pub fn testcontainers(target: &Target) -> Result<ClientConfig, Error> {
    let plan = target.plan()?;
    let authority = plan.mirror.authority();
    let hub = plan.entries.iter().find(|e| is_docker_hub(&e.name));
    let prefix = match (&plan.dedicated_to, hub) {
        (Some(_), Some(_)) => format!("{authority}/"),
        (None, Some(e)) => format!("{authority}/{}/", e.name),
        (_, None) => {
            return Err(Error::NeedsDockerHub(format!(
                "testcontainers only prefixes Docker Hub images, and ferry at {} does not \
                 serve Docker Hub; name ferry in the image instead ({authority}/<registry>/<repo>)",
                plan.mirror
            )));
        }
    };
    let lines = vec![
        format!("~/{TESTCONTAINERS_PROPERTIES_PATH}, read by testcontainers-java (and by the"),
        "other implementations that read this file); or set the environment variable".to_owned(),
        format!("TESTCONTAINERS_HUB_IMAGE_NAME_PREFIX={prefix}"),
        "Only Docker Hub images without a registry in their name (redis:7) are prefixed."
            .to_owned(),
    ];
    let mut contents = crate::header(Client::Testcontainers, &plan.mirror, &lines);
    contents.push_str(&format!("{PREFIX_KEY}={prefix}\n"));
    let mut notes = vec![
        format!(
            "install as ~/{TESTCONTAINERS_PROPERTIES_PATH} (--write ~ merges into an existing \
             one), or export TESTCONTAINERS_HUB_IMAGE_NAME_PREFIX={prefix} (CI jobs)"
        ),
        format!(
            "only Docker Hub images named without a registry are prefixed (redis:7 becomes \
             {prefix}redis:7); ghcr.io/..., quay.io/... and docker.io/... names, images built \
             from a Dockerfile and Compose services are pulled as written"
        ),
        "the Docker daemon does the pull: there is no direct fallback, a prefixed image only \
         exists at ferry"
            .to_owned(),
    ];
    if plan.mirror.is_plain_http() {
        notes.push(format!(
            "{authority} is plain HTTP: add it to the Docker daemon's insecure-registries \
             (`ferry client-config docker` does)"
        ));
    }
    Ok(ClientConfig {
        client: Client::Testcontainers,
        files: vec![GeneratedFile {
            path: TESTCONTAINERS_PROPERTIES_PATH.into(),
            contents,
            on_existing: OnExisting::MergeProperties,
        }],
        snippets: Vec::new(),
        notes,
    })
}

/// Merges the `key=value` lines of a generated properties file into an existing one.
///
/// Each generated key replaces the existing line(s) for that key in place (a key written with
/// `=`, `:` or a space, as Java's `Properties` reads it), or is appended; every other line,
/// comments included, stays. When every key already has ferry's value the existing text is
/// returned as is. Errors on a generated line that is not `key=value`.
pub fn merge_properties(existing: &str, generated: &str) -> Result<String, String> {
    let mut lines: Vec<String> = existing.lines().map(str::to_owned).collect();
    for line in generated.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("generated line {line:?} is not key=value"))?;
        let mut found = false;
        lines.retain_mut(|l| {
            if property_key(l) != Some(key) {
                return true;
            }
            let keep = !found;
            if keep {
                *l = format!("{key}={value}");
            }
            found = true;
            keep
        });
        if !found {
            lines.push(format!("{key}={value}"));
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    let same = out.trim_end() == existing.trim_end();
    Ok(if same { existing.to_owned() } else { out })
}

/// The key of a properties line (`key=value`, `key: value`, `key value`), or `None` for a
/// comment or blank line. Continuation lines and escapes are not needed for ferry's keys.
fn property_key(line: &str) -> Option<&str> {
    let l = line.trim_start();
    if l.is_empty() || l.starts_with('#') || l.starts_with('!') {
        return None;
    }
    let end = l.find(['=', ':', ' ', '\t']).unwrap_or(l.len());
    Some(&l[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Upstream;

    fn target(mirror: &str) -> Target {
        Target::new(
            mirror,
            [
                Upstream::new("docker.io").with_aliases(["index.docker.io"]),
                Upstream::new("ghcr.io"),
            ],
            Some("docker.io"),
        )
        .unwrap()
    }

    fn prefix(c: &ClientConfig) -> String {
        let f = &c.files[0];
        assert_eq!(f.path.to_str(), Some(".testcontainers.properties"));
        let props: Vec<_> = f
            .contents
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert_eq!(props.len(), 1, "{}", f.contents);
        props[0]
            .strip_prefix("hub.image.name.prefix=")
            .unwrap()
            .to_owned()
    }

    #[test]
    fn prefix_uses_the_docker_io_path() {
        let c = testcontainers(&target("http://127.0.0.1:5002")).unwrap();
        assert_eq!(prefix(&c), "127.0.0.1:5002/docker.io/");
        assert!(c.files[0].contents.starts_with(crate::GENERATED_MARKER));
        assert!(c.notes.join("\n").contains("insecure-registries"));
        let c = testcontainers(&target("https://m.example.com")).unwrap();
        assert_eq!(prefix(&c), "m.example.com/docker.io/");
        assert!(!c.notes.join("\n").contains("insecure-registries"));
    }

    #[test]
    fn dedicated_host_and_no_docker_hub() {
        let t = target("https://hub.m.example.com")
            .with_hosts([("hub.m.example.com", "docker.io")])
            .unwrap();
        assert_eq!(prefix(&testcontainers(&t).unwrap()), "hub.m.example.com/");
        let t = Target::new("http://m:5000", ["ghcr.io"], None).unwrap();
        let e = testcontainers(&t).unwrap_err().to_string();
        assert!(e.contains("only prefixes Docker Hub images"), "{e}");
        let t = target("https://ghcr.m.example.com")
            .with_hosts([("ghcr.m.example.com", "ghcr.io")])
            .unwrap();
        assert!(testcontainers(&t).is_err());
    }

    #[test]
    fn merge_replaces_the_key_and_keeps_the_rest() {
        let ours = "# ferry\nhub.image.name.prefix=m:5000/docker.io/\n";
        let existing = "#Modified by Testcontainers\ndocker.client.strategy=org.testcontainers.dockerclient.UnixSocketClientProviderStrategy\nhub.image.name.prefix : old.example/\ntestcontainers.reuse.enable=true\n";
        let merged = merge_properties(existing, ours).unwrap();
        assert_eq!(
            merged,
            "#Modified by Testcontainers\ndocker.client.strategy=org.testcontainers.dockerclient.UnixSocketClientProviderStrategy\nhub.image.name.prefix=m:5000/docker.io/\ntestcontainers.reuse.enable=true\n"
        );
        assert_eq!(merge_properties(&merged, ours).unwrap(), merged);
        let appended = merge_properties("a=1", ours).unwrap();
        assert_eq!(appended, "a=1\nhub.image.name.prefix=m:5000/docker.io/\n");
        assert_eq!(
            merge_properties("", ours).unwrap(),
            "hub.image.name.prefix=m:5000/docker.io/\n"
        );
        // duplicates of the key collapse into one
        let dup =
            merge_properties("hub.image.name.prefix=a\nhub.image.name.prefix=b\n", ours).unwrap();
        assert_eq!(dup, "hub.image.name.prefix=m:5000/docker.io/\n");
        assert!(merge_properties("", "oops").is_err());
    }
}
