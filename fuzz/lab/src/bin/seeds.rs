//! Writes the fuzz targets' seed corpora: `seeds DIR` fills `DIR/datagram`, `DIR/log_decode`
//! and `DIR/update_decode` with inputs made from valid objects (see
//! `lightcone_fuzz_lab::seeds`), replacing what was there.
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "seeds".into()));
    let sets = [
        ("datagram", lightcone_fuzz_lab::seeds::datagram_seeds()),
        ("log_decode", lightcone_fuzz_lab::log::seeds()),
        ("update_decode", lightcone_fuzz_lab::update::seeds()),
    ];
    for (target, seeds) in sets {
        let d = dir.join(target);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        let mut bytes = 0;
        for (name, s) in &seeds {
            bytes += s.len();
            std::fs::write(d.join(name), s).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        println!(
            "{target}: {} seeds, {bytes} bytes in {}",
            seeds.len(),
            d.display()
        );
    }
}
