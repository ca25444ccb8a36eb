//! `ymera-gateway`: the HTTP edge of the platform.

/// mimalloc instead of glibc's malloc: the request path allocates and frees
/// small buffers on two threads, where glibc's arenas cost ~13 % of the
/// gateway's CPU (BENCHMARKS.md, REST).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ymera_core::service::main("ymera-gateway", |config, env| async move {
        let settings = ymera_gateway::Settings::read(&env)?;
        ymera_gateway::run(config, settings).await
    })
}
