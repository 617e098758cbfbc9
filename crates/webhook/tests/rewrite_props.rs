//! Property tests of the rewrite: every valid reference either becomes a mirrored reference that
//! parses back with the same repository, tag and digest (and rewriting it again changes
//! nothing), or is left unchanged for a stated reason. Arbitrary strings never panic.

use ferry_oci::ImageRef;
use ferry_webhook::{Rewrite, Settings, Skip};
use proptest::prelude::*;

fn registry() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("docker.io".to_owned())),
        Just(Some("index.docker.io".to_owned())),
        Just(Some("ghcr.io".to_owned())),
        Just(Some("quay.io".to_owned())),
        Just(Some("gcr.io".to_owned())),
        Just(Some("localhost".to_owned())),
        Just(Some("127.0.0.1:5001".to_owned())),
        "[a-z][a-z0-9-]{0,8}[a-z0-9]\\.[a-z]{2,5}(:[1-9][0-9]{0,3})?".prop_map(Some),
    ]
}

fn repository() -> impl Strategy<Value = String> {
    let component = "[a-z0-9]{1,6}((\\.|_|__|-+)[a-z0-9]{1,6}){0,2}";
    prop::collection::vec(component, 1..5).prop_map(|c| c.join("/"))
}

fn reference() -> impl Strategy<Value = String> {
    let tag = proptest::option::of("[A-Za-z0-9_][A-Za-z0-9._-]{0,20}");
    let digest = proptest::option::of("[0-9a-f]{64}");
    (registry(), repository(), tag, digest).prop_map(|(reg, repo, tag, digest)| {
        let mut s = reg.map(|r| format!("{r}/{repo}")).unwrap_or(repo);
        if let Some(t) = tag {
            s = format!("{s}:{t}");
        }
        if let Some(d) = digest {
            s = format!("{s}@sha256:{d}");
        }
        s
    })
}

fn configs() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("mirror: mirror.example.com"),
        Just("mirror: 127.0.0.1:5000/ferry/cache"),
        Just(
            "mirror: m.example.com\nregistries: {docker.io: hub.example.com, quay.io: q.example.com/quay}"
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn valid_references_survive_rewrite_and_parse(image in reference(), config in configs()) {
        let original = ImageRef::parse(&image);
        prop_assume!(original.is_ok());
        let original = original.unwrap();
        let rules = Settings::from_yaml(config).unwrap().rules;
        match rules.rewrite(&image) {
            Rewrite::Rewritten(new) => {
                let parsed = ImageRef::parse(&new).expect("rewritten reference parses");
                prop_assert!(parsed.repository.as_str().ends_with(original.repository.as_str()), "{new}");
                prop_assert_eq!(&parsed.tag, &original.tag);
                prop_assert_eq!(&parsed.digest, &original.digest);
                prop_assert_eq!(rules.rewrite(&new), Rewrite::Unchanged(Skip::AlreadyMirrored));
            }
            Rewrite::Unchanged(Skip::Unrepresentable(_)) => {
                // Only a registry with a port, or a name too long once prefixed, is unmappable.
                prop_assert!(original.registry.contains(':') || image.len() > 200, "{image}");
            }
            other => prop_assert!(false, "{image}: {other:?}"),
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(image in ".{0,200}") {
        let rules = Settings::from_yaml("mirror: m.example.com").unwrap().rules;
        let _ = rules.rewrite(&image);
    }
}
