// The `Py_3_12`-style cfgs pyo3 derives from the interpreter it builds for,
// for code that depends on the object layout (`immortal.rs`).
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
