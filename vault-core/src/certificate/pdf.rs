//! A minimal PDF 1.7 writer for the certificate [`Document`]: no browser,
//! no font file, no dependency. Text is set in the standard Type 1 fonts
//! every PDF reader has (Helvetica, Helvetica-Bold, Courier) with
//! WinAnsiEncoding, wrapped line by line with the fonts' metrics; the summary
//! on page 1, the appendix from page 2. The signed certificate file is
//! attached inside the PDF as an embedded file (`/Names /EmbeddedFiles`,
//! `/AF`, a `/Filespec` with `/AFRelationship /Source`, subtype
//! `application/json`), so the one file carries its own proof:
//! `pdfdetach -saveall` or any reader's attachment pane gets it back byte
//! for byte.
//!
//! Every character outside WinAnsi becomes `?`; parentheses, backslashes and
//! every byte outside printable ASCII are escaped in PDF strings, so no value
//! from a certificate can end a string or inject an operator. The output is
//! deterministic: the same certificate renders to the same bytes.

use std::fmt::Write as _;

use super::document::{Block, Document};
use crate::crypto::sha256;

const PAGE_W: f32 = 612.0; // US Letter
const PAGE_H: f32 = 792.0;
const MARGIN: f32 = 50.0;
const TOP: f32 = PAGE_H - 42.0;
const BOTTOM: f32 = 56.0;
const CONTENT_W: f32 = PAGE_W - 2.0 * MARGIN;
const BODY: f32 = 8.5;
const LEAD: f32 = 10.0;
const LABEL_W: f32 = 128.0;
const FIELD_W: f32 = 215.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Font {
    Regular,
    Bold,
    Mono,
}

impl Font {
    fn name(self) -> &'static str {
        match self {
            Font::Regular => "/F1",
            Font::Bold => "/F2",
            Font::Mono => "/F3",
        }
    }
}

/// Helvetica advance widths (Adobe AFM, 1/1000 em) for codes 32..=126.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];

/// Helvetica-Bold advance widths for codes 32..=126.
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667,
    611, 778, 722, 278, 556, 722, 611, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556,
    278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
];

/// The text in WinAnsiEncoding (Windows-1252): Latin-1 and the typographic
/// marks map to their codes, control characters to spaces, anything else to `?`.
pub(crate) fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => c as u32 as u8,
            '\u{20ac}' => 0x80,
            '\u{201a}' => 0x82,
            '\u{192}' => 0x83,
            '\u{201e}' => 0x84,
            '\u{2026}' => 0x85,
            '\u{2020}' => 0x86,
            '\u{2021}' => 0x87,
            '\u{2c6}' => 0x88,
            '\u{2030}' => 0x89,
            '\u{160}' => 0x8a,
            '\u{2039}' => 0x8b,
            '\u{152}' => 0x8c,
            '\u{17d}' => 0x8e,
            '\u{2018}' => 0x91,
            '\u{2019}' => 0x92,
            '\u{201c}' => 0x93,
            '\u{201d}' => 0x94,
            '\u{2022}' => 0x95,
            '\u{2013}' => 0x96,
            '\u{2014}' => 0x97,
            '\u{2dc}' => 0x98,
            '\u{2122}' => 0x99,
            '\u{161}' => 0x9a,
            '\u{203a}' => 0x9b,
            '\u{153}' => 0x9c,
            '\u{17e}' => 0x9e,
            '\u{178}' => 0x9f,
            '\t' | '\n' | '\r' => b' ',
            _ => b'?',
        })
        .collect()
}

/// A PDF literal string: `(`, `)` and `\` escaped, every byte outside
/// printable ASCII as an octal escape.
pub(crate) fn pdf_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('(');
    for &b in bytes {
        match b {
            b'(' | b')' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03o}");
            }
        }
    }
    out.push(')');
    out
}

fn char_width(font: Font, b: u8) -> u16 {
    match (font, b) {
        (Font::Mono, _) => 600,
        (Font::Regular, 32..=126) => HELVETICA[usize::from(b - 32)],
        (Font::Bold, 32..=126) => HELVETICA_BOLD[usize::from(b - 32)],
        _ => 611, // accented letters and marks: a wide estimate
    }
}

fn width(font: Font, size: f32, bytes: &[u8]) -> f32 {
    bytes
        .iter()
        .map(|&b| f32::from(char_width(font, b)))
        .sum::<f32>()
        * size
        / 1000.0
}

/// Greedy line breaking at spaces; a word wider than the line is cut.
fn wrap(font: Font, size: f32, text: &str, max: f32) -> Vec<Vec<u8>> {
    let bytes = win_ansi(text);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    for word in bytes.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        let mut candidate = line.clone();
        if !candidate.is_empty() {
            candidate.push(b' ');
        }
        candidate.extend_from_slice(word);
        if width(font, size, &candidate) <= max {
            line = candidate;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        for &b in word {
            line.push(b);
            if width(font, size, &line) > max && line.len() > 1 {
                // Cut after the last '.', '_' or '/' of the line if there
                // is one (a dotted path), else before the last character.
                let cut = line[..line.len() - 1]
                    .iter()
                    .rposition(|c| matches!(c, b'.' | b'_' | b'/'))
                    .map_or(line.len() - 1, |i| i + 1);
                let rest = line.split_off(cut);
                lines.push(std::mem::replace(&mut line, rest));
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Pages being laid out, top to bottom.
struct Pages {
    done: Vec<String>,
    cur: String,
    y: f32,
}

impl Pages {
    fn new() -> Pages {
        Pages {
            done: Vec::new(),
            cur: String::new(),
            y: TOP,
        }
    }

    fn new_page(&mut self) {
        self.done.push(std::mem::take(&mut self.cur));
        self.y = TOP;
    }

    /// Starts a new page unless `h` points still fit on this one.
    fn need(&mut self, h: f32) {
        if self.y - h < BOTTOM && self.y < TOP {
            self.new_page();
        }
    }

    fn text(&mut self, font: Font, size: f32, x: f32, y: f32, line: &[u8]) {
        let _ = writeln!(
            self.cur,
            "BT {} {size:.1} Tf {x:.2} {y:.2} Td {} Tj ET",
            font.name(),
            pdf_string(line)
        );
    }

    fn rule(&mut self, y: f32, w: f32) {
        let _ = writeln!(
            self.cur,
            "{w:.1} w {MARGIN:.2} {y:.2} m {:.2} {y:.2} l S",
            MARGIN + CONTENT_W
        );
    }

    fn heading(&mut self, t: &str) {
        self.need(16.0 + 3.0 * LEAD);
        self.y -= 11.0;
        self.text(Font::Bold, 10.5, MARGIN, self.y, &win_ansi(t));
        self.rule(self.y - 2.5, 0.8);
        self.y -= 2.5 + LEAD;
    }

    fn rows(&mut self, rows: &[(String, String)], label_w: f32) {
        for (k, v) in rows {
            let label = wrap(Font::Bold, BODY, k, label_w - 8.0);
            let value = wrap(Font::Regular, BODY, v, CONTENT_W - label_w);
            let n = label.len().max(value.len());
            self.need(n as f32 * LEAD);
            for i in 0..n {
                if i > 0 {
                    self.need(LEAD); // only a row longer than a page breaks
                }
                if let Some(l) = label.get(i) {
                    self.text(Font::Bold, BODY, MARGIN, self.y, l);
                }
                if let Some(l) = value.get(i) {
                    self.text(Font::Regular, BODY, MARGIN + label_w, self.y, l);
                }
                self.y -= LEAD;
            }
            self.y -= 1.0;
        }
    }

    fn para(&mut self, font: Font, size: f32, indent: f32, t: &str) {
        for l in wrap(font, size, t, CONTENT_W - indent) {
            self.need(LEAD);
            self.text(font, size, MARGIN + indent, self.y, &l);
            self.y -= LEAD;
        }
        self.y -= 3.0;
    }

    fn table(&mut self, head: &[String], widths: &[f32], rows: &[Vec<String>], mono: bool) {
        let xs: Vec<f32> = widths
            .iter()
            .scan(MARGIN, |x, w| {
                let at = *x;
                *x += w * CONTENT_W;
                Some(at)
            })
            .collect();
        let draw_head = |p: &mut Pages| {
            p.need(2.0 * LEAD);
            for (i, h) in head.iter().enumerate() {
                let x = xs.get(i).copied().unwrap_or(MARGIN);
                p.text(Font::Bold, BODY, x, p.y, &win_ansi(h));
            }
            p.rule(p.y - 2.5, 0.4);
            p.y -= LEAD + 1.0;
        };
        draw_head(self);
        let font = if mono { Font::Mono } else { Font::Regular };
        let size = if mono { 8.0 } else { BODY };
        for r in rows {
            let cells: Vec<Vec<Vec<u8>>> = r
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let w = widths.get(i).copied().unwrap_or(0.2) * CONTENT_W - 6.0;
                    wrap(font, size, c, w)
                })
                .collect();
            let h = cells.iter().map(Vec::len).max().unwrap_or(1) as f32 * LEAD;
            if self.y - h < BOTTOM {
                self.new_page();
                draw_head(self);
            }
            for (i, lines) in cells.iter().enumerate() {
                let x = xs.get(i).copied().unwrap_or(MARGIN);
                for (j, l) in lines.iter().enumerate() {
                    self.text(font, size, x, self.y - j as f32 * LEAD, l);
                }
            }
            self.y -= h + 1.0;
        }
        self.y -= 3.0;
    }

    fn blocks(&mut self, blocks: &[Block]) {
        for b in blocks {
            match b {
                Block::Heading(t) => self.heading(t),
                Block::Rows(r) => self.rows(r, LABEL_W),
                Block::Fields(r) => self.rows(r, FIELD_W),
                Block::Para(t) => self.para(Font::Regular, BODY, 0.0, t),
                Block::Code(t) => self.para(Font::Mono, 8.0, 12.0, t),
                Block::Table {
                    head,
                    widths,
                    rows,
                    mono,
                } => self.table(head, widths, rows, *mono),
            }
        }
    }

    /// The verdict in a box: black when verified, red when not.
    fn verdict(&mut self, doc: &Document) {
        let pad = 7.0;
        let head = wrap(Font::Bold, 11.0, &doc.verdict, CONTENT_W - 2.0 * pad);
        let lines: Vec<Vec<u8>> = doc
            .verdict_lines
            .iter()
            .flat_map(|l| wrap(Font::Regular, BODY, l, CONTENT_W - 2.0 * pad))
            .collect();
        let h = 2.0 * pad + head.len() as f32 * 13.5 + lines.len() as f32 * LEAD;
        self.need(h + 4.0);
        let color = if doc.verified { "0 0 0" } else { "0.69 0 0" };
        let _ = writeln!(
            self.cur,
            "q {color} RG {color} rg 2 w {MARGIN:.2} {:.2} {CONTENT_W:.2} {h:.2} re S",
            self.y - h
        );
        let mut y = self.y - pad - 10.0;
        for l in &head {
            self.text(Font::Bold, 11.0, MARGIN + pad, y, l);
            y -= 13.5;
        }
        for l in &lines {
            self.text(Font::Regular, BODY, MARGIN + pad, y + 2.5, l);
            y -= LEAD;
        }
        self.cur.push_str("Q\n");
        self.y -= h + 4.0;
    }
}

/// Lays the document out; returns the page content streams, how many
/// pages the summary took and the points left free below it.
fn layout(doc: &Document) -> (Vec<String>, usize, f32) {
    let mut p = Pages::new();
    p.y -= 14.0;
    p.text(Font::Bold, 17.0, MARGIN, p.y, b"Certificate of Destruction");
    p.y -= 14.0;
    p.para(
        Font::Regular,
        BODY,
        0.0,
        &format!(
            "Personal information destroyed by cryptographic erase (M.G.L. c. 93I section 2). Certificate {}",
            doc.id
        ),
    );
    p.verdict(doc);
    p.blocks(&doc.summary);
    let summary_pages = p.done.len() + 1;
    let room = p.y - BOTTOM;
    p.new_page();
    p.blocks(&doc.appendix);
    p.new_page();
    let mut pages = p.done;
    let n = pages.len();
    let attached = doc.attachment_name();
    for (i, page) in pages.iter_mut().enumerate() {
        let mut foot = format!(
            "Certificate of Destruction {} - page {} of {n}",
            doc.id,
            i + 1
        );
        if !doc.verified {
            foot.push_str(" - FAILED VERIFICATION: do not rely on this certificate");
        }
        let color = if doc.verified { "0 g" } else { "0.69 0 0 rg" };
        let _ = writeln!(
            page,
            "0 0 0 RG 0.4 w {MARGIN:.2} 44.00 m {:.2} 44.00 l S\n{color}\nBT /F1 7.5 Tf {MARGIN:.2} 34.00 Td {} Tj ET\n0 g",
            MARGIN + CONTENT_W,
            pdf_string(&win_ansi(&foot))
        );
        if i == 0 {
            let _ = writeln!(
                page,
                "BT /F1 7.5 Tf {MARGIN:.2} 25.00 Td {} Tj ET",
                pdf_string(&win_ansi(&format!(
                    "Attached to this PDF: {attached}, the signed certificate (the proof). A printed copy is not the proof."
                )))
            );
        }
    }
    (pages, summary_pages, room)
}

/// `2026-03-02T15:04:05Z` as a PDF date `D:20260302150405Z`, if it is one.
fn pdf_date(rfc3339: &str) -> Option<String> {
    let digits: String = rfc3339
        .chars()
        .take(19)
        .filter(char::is_ascii_digit)
        .collect();
    (digits.len() == 14).then(|| format!("D:{digits}Z"))
}

/// The PDF: the document's pages with `file` (the certificate file's bytes)
/// attached; `issued_at` dates the file.
pub(crate) fn write(doc: &Document, file: &[u8], issued_at: &str) -> Vec<u8> {
    let (pages, ..) = layout(doc);
    let name = pdf_string(doc.attachment_name().as_bytes());
    let dates = pdf_date(issued_at)
        .map(|d| {
            let d = pdf_string(d.as_bytes());
            (format!(" /CreationDate {d} /ModDate {d}"), d)
        })
        .unwrap_or_default();
    let page_base = 9;
    let total = page_base + 2 * pages.len(); // object numbers 1..total-1
    let mut out: Vec<u8> = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = vec![0usize; total];
    let mut obj = |out: &mut Vec<u8>, n: usize, body: &[u8]| {
        offsets[n] = out.len();
        out.extend_from_slice(format!("{n} 0 obj\n").as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    };
    let stream = |dict: &str, data: &[u8]| {
        let mut v = format!("<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
        v.extend_from_slice(data);
        v.extend_from_slice(b"\nendstream");
        v
    };
    obj(
        &mut out,
        1,
        format!(
            "<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles << /Names [{name} 7 0 R] >> >> \
             /AF [7 0 R] /PageMode /UseAttachments /Lang (en-US) /ViewerPreferences << /DisplayDocTitle true >> >>"
        )
        .as_bytes(),
    );
    let kids: Vec<String> = (0..pages.len())
        .map(|i| format!("{} 0 R", page_base + 2 * i))
        .collect();
    obj(
        &mut out,
        2,
        format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            kids.join(" "),
            pages.len()
        )
        .as_bytes(),
    );
    for (n, base) in [(3, "Helvetica"), (4, "Helvetica-Bold"), (5, "Courier")] {
        obj(
            &mut out,
            n,
            format!(
                "<< /Type /Font /Subtype /Type1 /BaseFont /{base} /Encoding /WinAnsiEncoding >>"
            )
            .as_bytes(),
        );
    }
    obj(
        &mut out,
        6,
        &stream(
            &format!(
                "/Type /EmbeddedFile /Subtype /application#2Fjson /Params << /Size {}{} >>",
                file.len(),
                dates.0
            ),
            file,
        ),
    );
    obj(
        &mut out,
        7,
        format!(
            "<< /Type /Filespec /F {name} /UF {name} /AFRelationship /Source \
             /Desc (The signed certificate of destruction: verify it with pivault certificate verify) \
             /EF << /F 6 0 R /UF 6 0 R >> >>"
        )
        .as_bytes(),
    );
    obj(
        &mut out,
        8,
        format!(
            "<< /Title {} /Subject (Cryptographic erase of personal information) /Creator (pivault) /Producer {}{} >>",
            pdf_string(&win_ansi(&format!("Certificate of Destruction {}", doc.id))),
            pdf_string(format!("pivault {}", env!("CARGO_PKG_VERSION")).as_bytes()),
            dates.0
        )
        .as_bytes(),
    );
    let mut hashed = file.to_vec();
    for (i, content) in pages.iter().enumerate() {
        let n = page_base + 2 * i;
        obj(
            &mut out,
            n,
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_W} {PAGE_H}] \
                 /Resources << /Font << /F1 3 0 R /F2 4 0 R /F3 5 0 R >> >> /Contents {} 0 R >>",
                n + 1
            )
            .as_bytes(),
        );
        obj(&mut out, n + 1, &stream("", content.as_bytes()));
        hashed.extend_from_slice(content.as_bytes());
    }
    let xref = out.len();
    let mut table = format!("xref\n0 {total}\n0000000000 65535 f \n");
    for off in &offsets[1..] {
        let _ = writeln!(table, "{off:010} 00000 n ");
    }
    let id = hex::encode(&sha256(&hashed)[..16]);
    let _ = write!(
        table,
        "trailer\n<< /Size {total} /Root 1 0 R /Info 8 0 R /ID [<{id}> <{id}>] >>\nstartxref\n{xref}\n%%EOF\n"
    );
    out.extend_from_slice(table.as_bytes());
    out
}

/// How many pages the summary takes, and the points left free on its last.
#[cfg(test)]
pub(crate) fn summary_pages(doc: &Document) -> (usize, f32) {
    let (_, pages, room) = layout(doc);
    (pages, room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_and_win_ansi() {
        assert_eq!(pdf_string(b"a(b)c\\d"), "(a\\(b\\)c\\\\d)");
        assert_eq!(
            pdf_string(&win_ansi("\u{a7}2 \u{2014} caf\u{e9}")),
            "(\\2472 \\227 caf\\351)"
        );
        assert_eq!(win_ansi("\u{4e2d}\u{1f600}\n"), b"?? ".to_vec());
        // No byte of a hostile value survives unescaped as a delimiter.
        let s = pdf_string(&win_ansi(") Tj ET BT /F1 99 Tf (x"));
        assert!(s.starts_with("(\\) Tj") && s.ends_with("(x)"));
    }

    #[test]
    fn wrapping_keeps_every_word_and_fits_the_width() {
        let text = "the quick brown fox jumps over the lazy dog ".repeat(20)
            + &"0123456789abcdef".repeat(10);
        let lines = wrap(Font::Regular, BODY, &text, 200.0);
        assert!(lines.len() > 5);
        for l in &lines {
            assert!(width(Font::Regular, BODY, l) <= 200.0, "{l:?}");
        }
        let joined: Vec<u8> = lines.concat();
        let squeezed: Vec<u8> = win_ansi(&text).into_iter().filter(|&b| b != b' ').collect();
        assert_eq!(
            joined
                .into_iter()
                .filter(|&b| b != b' ')
                .collect::<Vec<u8>>(),
            squeezed
        );
    }

    #[test]
    fn dates_convert_or_are_left_out() {
        assert_eq!(
            pdf_date("2026-03-02T15:04:05Z").as_deref(),
            Some("D:20260302150405Z")
        );
        assert_eq!(pdf_date("yesterday"), None);
    }
}
