"""Entry points: `launch.train` (training), `launch.demo` (the CPU demo)."""
