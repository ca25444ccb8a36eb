// Re-embed the migrations when a file is added to or changed in `migrations/`.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
