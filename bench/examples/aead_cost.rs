//! What the cipher alone costs a TLS echo server per message (issue 18,
//! target 7): AES-GCM from aws-lc-rs, the crypto provider rustls uses by
//! default, sealing and opening one record of `SIZE` bytes in place, as an
//! echoed message of that size costs the server on top of plain TCP (one
//! record opened, one sealed; no copies, no allocation, no framing).
//!
//! ```sh
//! cargo build --release -p wsloop-bench --features tls --example aead_cost
//! taskset -c 0 target/release/examples/aead_cost [SIZE] [PAIRS]   # 16384 50000
//! ```
//!
//! Prints, per suite and round, the µs per seal+open pair and the
//! plaintext throughput of each direction. The fastest round is the
//! floor a TLS server pays per echoed message; docs/TLS.md compares it
//! with the server CPU per message over ws:// and wss://.

#[cfg(feature = "tls")]
fn run(size: usize, pairs: u64) {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
    use std::time::Instant;

    let suites = [
        ("TLS13_AES_128_GCM_SHA256", &AES_128_GCM, 16),
        ("TLS13_AES_256_GCM_SHA384", &AES_256_GCM, 32),
    ];
    for (name, alg, key_len) in suites {
        let key = LessSafeKey::new(UnboundKey::new(alg, &vec![7u8; key_len]).expect("key"));
        // A TLS 1.3 record header is the additional data.
        let aad = [23u8, 3, 3, (size >> 8) as u8, size as u8];
        let mut record = vec![b'a'; size];
        let mut best = f64::INFINITY;
        for round in 1..=3 {
            let started = Instant::now();
            for seq in 0..pairs {
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&seq.to_be_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut record,
                    )
                    .expect("seal");
                record.extend_from_slice(tag.as_ref());
                let plain = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut record,
                    )
                    .expect("open")
                    .len();
                record.truncate(plain);
            }
            let secs = started.elapsed().as_secs_f64();
            let us = secs * 1e6 / pairs as f64;
            best = best.min(us);
            println!(
                "{name} round {round}: {us:.2} µs per seal+open of {size} B, {:.2} GB/s each way",
                (size as f64 * pairs as f64) / secs / 1e9
            );
        }
        println!("{name}: fastest {best:.2} µs per pair");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: u64| -> u64 {
        match args.get(i) {
            None => default,
            Some(s) => s.parse().unwrap_or_else(|_| {
                eprintln!("aead_cost: not a number: {s:?} (usage: aead_cost [SIZE] [PAIRS])");
                std::process::exit(2)
            }),
        }
    };
    let (size, pairs) = (num(0, 16384), num(1, 50_000));
    if !(1..=16384).contains(&size) || pairs == 0 {
        eprintln!("aead_cost: SIZE must be 1..=16384 (one TLS record) and PAIRS at least 1");
        std::process::exit(2);
    }
    #[cfg(feature = "tls")]
    run(size as usize, pairs);
    #[cfg(not(feature = "tls"))]
    {
        eprintln!("aead_cost: build with --features tls");
        std::process::exit(2);
    }
}
