//! Link the binary to the libpython it was built against, and find it there at run time.
//!
//! Without an rpath the dynamic loader picks whatever `libpython3.x.so` comes first on
//! the system path (Debian's /usr/lib one on this kind of machine), whose site-packages
//! differ from the interpreter the user built with: pip-installed packages vanish.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    let config = pyo3_build_config::get();
    if let Some(dir) = config.lib_dir() {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
        println!("cargo:rustc-env=RWSGI_PYTHON_LIBDIR={dir}");
    }
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=RWSGI_PYTHON_EXECUTABLE={exe}");
    }
    println!("cargo:rustc-env=RWSGI_PYTHON_VERSION={}", config.version());
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
