//! Prints each client's configuration for a sample target: `cargo run -p ferry-clientcfg
//! --example print -- http://127.0.0.1:5000` (used to produce the examples in docs/clients.md).

use ferry_clientcfg::{Client, Target, Upstream, generate};

fn main() {
    let mirror = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:5000".to_owned());
    let target = Target::new(
        &mirror,
        [
            Upstream::new("docker.io").with_aliases(["index.docker.io"]),
            Upstream::new("ghcr.io"),
            Upstream::new("registry.k8s.io").with_aliases(["k8s.gcr.io"]),
        ],
        Some("docker.io"),
    )
    .expect("valid sample target");
    for client in Client::ALL {
        println!("######## {client}");
        match generate(client, &target) {
            Ok(c) => {
                print!("{}", c.render());
                for n in &c.notes {
                    println!("## note: {n}");
                }
            }
            Err(e) => println!("## error: {e}"),
        }
    }
}
