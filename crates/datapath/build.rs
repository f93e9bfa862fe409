//! Compiles the C programs in `ebpf/` with Debian's clang (`-target bpf -O2 -g`, so the objects
//! carry BTF) into `OUT_DIR`, where `include_bytes!` picks them up. Failing here, with the
//! packages to install, beats an agent that builds and then cannot load its datapath.
use std::path::{Path, PathBuf};
use std::process::Command;

/// (source under ebpf/, object name): the datapath, and a program the verifier must reject
/// (only used by the tests that check a broken object fails with a clear error).
const PROGRAMS: &[(&str, &str)] = &[
    ("mesh_datapath.c", "mesh_datapath.o"),
    ("tests/rejected.c", "rejected.o"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let ebpf = manifest.join("../../ebpf");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("X0_BPF_CLANG").unwrap_or_else(|_| "clang".to_owned());
    println!("cargo:rerun-if-env-changed=X0_BPF_CLANG");
    println!(
        "cargo:rerun-if-changed={}",
        ebpf.join("mesh_datapath.h").display()
    );

    // The uapi headers (linux/bpf.h) include <asm/types.h>, which Debian keeps under the
    // multiarch directory of the machine the build runs on.
    let multiarch = multiarch_include();
    for (source, object) in PROGRAMS {
        let source = ebpf.join(source);
        println!("cargo:rerun-if-changed={}", source.display());
        compile(&clang, &source, &out.join(object), &ebpf, multiarch.as_deref());
    }
}

fn multiarch_include() -> Option<String> {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let triple = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        _ => return None,
    };
    let dir = format!("/usr/include/{triple}");
    Path::new(&dir).is_dir().then_some(dir)
}

fn compile(clang: &str, source: &Path, object: &Path, include: &Path, multiarch: Option<&str>) {
    let mut command = Command::new(clang);
    command
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg("-I")
        .arg(include);
    if let Some(dir) = multiarch {
        command.arg("-I").arg(dir);
    }
    command.arg("-c").arg(source).arg("-o").arg(object);
    let output = match command.output() {
        Ok(output) => output,
        Err(error) => panic!(
            "cannot run `{clang}` to build the eBPF programs ({error}). Install Debian's clang, \
             llvm and libbpf-dev (apt-get install clang llvm libbpf-dev), or point X0_BPF_CLANG \
             at a clang that has the BPF target."
        ),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("bpf/bpf_helpers.h") {
            "\nThe libbpf headers are missing: apt-get install libbpf-dev."
        } else if stderr.contains("asm/types.h") || stderr.contains("linux/bpf.h") {
            "\nThe kernel uapi headers are missing: apt-get install linux-libc-dev."
        } else {
            ""
        };
        panic!(
            "`{clang}` failed to compile {}:\n{stderr}{hint}",
            source.display()
        );
    }
}
