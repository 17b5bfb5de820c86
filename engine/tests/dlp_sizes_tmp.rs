#[test]
fn sizes() {
    use aegis_engine::build::dlp::build_dlp;
    use aegis_engine::dlp::*;
    use aegis_engine::types::*;
    for ds in [&Detector::ALL[..], &[Detector::Ssn, Detector::CreditCard, Detector::Dob, Detector::Email][..]] {
    let t = std::time::Instant::now();
    let spec = build_dlp(ds, &[], DlpAction::Redact, [7; 32]).unwrap();
    let el = t.elapsed();
    let sc = Scanner::load(&spec).unwrap();
    eprintln!("fwd {} rev {} in {:?}; {:?}", spec.forward.len(), spec.reverse.len(), el, sc);
    }
}
