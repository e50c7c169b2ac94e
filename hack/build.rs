// Present so cargo resolves this crate's build-dependencies with the other host (build-time)
// crates, which is what pins their features; it does nothing.
fn main() {}
