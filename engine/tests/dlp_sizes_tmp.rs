#[test]
fn sizes() {
    use aegis_engine::build::dlp::build_dlp;
    use aegis_engine::dlp::*;
    use aegis_engine::types::*;
    for d in Detector::ALL {
        let t = std::time::Instant::now();
        match build_dlp(&[d], &[], DlpAction::Redact, [7; 32]) {
            Ok(spec) => eprintln!("{:?} fwd {} rev {} {:?}", d, spec.forward.len(), spec.reverse.len(), t.elapsed()),
            Err(e) => eprintln!("{:?} {e}", d),
        }
    }
    let mut acc = vec![];
    for d in Detector::ALL {
        acc.push(d);
        let t = std::time::Instant::now();
        match build_dlp(&acc, &[], DlpAction::Redact, [7; 32]) {
            Ok(spec) => eprintln!("{:?} fwd {} rev {} {:?}", acc, spec.forward.len(), spec.reverse.len(), t.elapsed()),
            Err(e) => eprintln!("{:?} {e}", acc),
        }
    }
}
