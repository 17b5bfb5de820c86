//! The `aegis` binary; everything lives in `aegis_compiler::cli`.

fn main() -> std::process::ExitCode {
    aegis_compiler::cli::main()
}
