use aegis_engine::build::dlp::build_dlp;
use aegis_engine::dlp::*;
use aegis_engine::types::*;

fn body64k() -> Vec<u8> {
    let mut s = String::from("{\"items\":[");
    let mut i = 0;
    while s.len() < 64 * 1024 {
        if i > 0 { s.push(','); }
        s.push_str(&format!("{{\"id\":{i},\"name\":\"widget number {i}\",\"description\":\"A sturdy widget for everyday use, made of recycled aluminium and shipped in a cardboard box\",\"tags\":[\"home\",\"garden\",\"tools\"],\"price\":{}.99,\"in_stock\":true}}", i % 97));
        i += 1;
    }
    s.push_str("]}");
    s.into_bytes()
}

#[test]
fn throughput() {
    let spec = build_dlp(&Detector::ALL, &[], DlpAction::Redact, [7; 32]).unwrap();
    let sc = Scanner::load(&spec).unwrap();
    eprintln!("sizes {:?} min {} ", sc.dfa_sizes(), spec.min_match_len);
    let body = body64k();
    let mut scratch = Scratch::new();
    assert_eq!(sc.scan(BodyKind::Json, &body, 64, &mut scratch).unwrap(), Outcome::Clean);
    let n = 2000;
    let t = std::time::Instant::now();
    for _ in 0..n { sc.scan(BodyKind::Json, &body, 64, &mut scratch).unwrap(); }
    let el = t.elapsed();
    eprintln!("json {:.0} MB/s", (body.len() * n) as f64 / el.as_secs_f64() / 1e6);
    let t = std::time::Instant::now();
    for _ in 0..n { aegis_engine::json::validate(&body, 64).unwrap(); }
    let el = t.elapsed();
    eprintln!("parse only {:.0} MB/s", (body.len() * n) as f64 / el.as_secs_f64() / 1e6);
    let t = std::time::Instant::now();
    for _ in 0..n { sc.scan(BodyKind::None, &body, 64, &mut scratch).unwrap(); }
    let el = t.elapsed();
    eprintln!("raw {:.0} MB/s", (body.len() * n) as f64 / el.as_secs_f64() / 1e6);
}
