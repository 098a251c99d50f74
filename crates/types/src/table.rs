//! Plain-text tables as `tctl` and `tsh` print them: columns padded with spaces, separated by
//! one space, the header underlined with dashes as wide as each column.

/// Renders `rows` under `header`. Trailing spaces are trimmed from each line.
pub fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths: [usize; N] = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                l.push(' ');
            }
            l.push_str(c);
            l.extend(std::iter::repeat_n(' ', w - c.chars().count()));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in rows {
        line(row.to_vec());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pads_and_underlines() {
        let t = super::render(["Bot", "User"], &[["robot".into(), "bot-robot".into()]]);
        assert_eq!(t, "Bot   User\n----- ---------\nrobot bot-robot\n");
    }
}
