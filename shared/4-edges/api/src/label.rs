//! The printable label of a machine: its Alipay QR code with the machine's id and name underneath.

use qrcode::{Color, EcLevel, QrCode};

/// An SVG document; `None` when the content cannot be encoded as a QR code (far too long).
pub fn svg(qr_content: &str, device_id: &str, name: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(qr_content.as_bytes(), EcLevel::M).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let module = 8usize;
    let quiet = 4 * module;
    let side = width * module + 2 * quiet;
    let text_height = 64;
    let mut path = String::new();
    for (i, c) in colors.iter().enumerate() {
        if *c == Color::Dark {
            let x = quiet + (i % width) * module;
            let y = quiet + (i / width) * module;
            path.push_str(&format!("M{x} {y}h{module}v{module}h-{module}z"));
        }
    }
    Some(format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{side}" height="{h}" viewBox="0 0 {side} {h}">"#,
            r##"<rect width="100%" height="100%" fill="#fff"/>"##,
            r##"<path fill="#000" d="{path}"/>"##,
            r#"<text x="{mid}" y="{t1}" font-family="sans-serif" font-size="22" font-weight="bold" text-anchor="middle">{id}</text>"#,
            r#"<text x="{mid}" y="{t2}" font-family="sans-serif" font-size="18" text-anchor="middle">{name}</text>"#,
            "</svg>"
        ),
        side = side,
        h = side + text_height,
        path = path,
        mid = side / 2,
        t1 = side + 20,
        t2 = side + 48,
        id = escape(device_id),
        name = escape(name),
    ))
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&apos;".to_owned(),
            c if c.is_control() => String::new(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_has_the_code_and_escaped_text() {
        let svg = svg(
            "https://qr.alipay.com/bax08452",
            "vm-1",
            "Café <Gate 3> & co",
        )
        .unwrap();
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains(">vm-1</text>"));
        assert!(svg.contains("Café &lt;Gate 3&gt; &amp; co"));
        // A version-2+ code has well over a hundred dark modules.
        assert!(svg.matches('z').count() > 100);
    }
}
