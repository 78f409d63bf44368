//! Finds the system DPDK with `pkg-config libdpdk`, compiles `shim/shim.c` with the
//! **full** `--cflags` output (DPDK's headers need its `-march`/`-include rte_config.h`
//! flags, which the `pkg-config` crate would drop) and links DPDK dynamically, so the
//! EAL loads every PMD (net_af_packet, net_pcap, net_null, net_ring, PCI drivers) from
//! its driver directory at start.

use std::process::Command;

fn pkg_config(args: &[&str]) -> Option<String> {
    let out = Command::new("pkg-config").args(args).arg("libdpdk").output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let Some(cflags) = pkg_config(&["--cflags"]) else {
        eprintln!("error: DPDK not found (pkg-config libdpdk failed): run scripts/install-deps.sh");
        std::process::exit(1);
    };
    let libs = pkg_config(&["--libs"]).unwrap_or_default();
    let version = pkg_config(&["--modversion"]).unwrap_or_default();
    println!("cargo:rustc-env=DPDK_VERSION={version}");
    println!("cargo:version={version}");

    let mut build = cc::Build::new();
    build.file("shim/shim.c").warnings(true).extra_warnings(true).opt_level(3);
    // Hand the compiler every flag pkg-config gives, including -include and -march.
    let mut it = cflags.split_whitespace();
    while let Some(flag) = it.next() {
        if flag == "-include" {
            if let Some(file) = it.next() {
                build.flag("-include").flag(file);
            }
        } else {
            build.flag(flag);
        }
    }
    build.compile("tlsgate_dpdk_shim");

    for tok in libs.split_whitespace() {
        if let Some(dir) = tok.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = tok.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}
