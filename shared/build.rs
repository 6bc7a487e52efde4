//! `sqlx::migrate!` embeds the migrations when this crate compiles: without this, a migration added
//! to `migrations/` would not reach a binary until some source file of `shared` changed.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
