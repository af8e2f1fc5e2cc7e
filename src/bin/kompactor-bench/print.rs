//! Tables of figures for the terminal: the first column (labels) aligned left, the figures
//! right, each column as wide as its caller says.

/// A table being printed, one row at a time.
pub struct Table {
    indent: &'static str,
    widths: Vec<usize>,
}

impl Table {
    /// A table whose columns are `widths` wide, each line starting with `indent`.
    pub fn new(indent: &'static str, widths: &[usize]) -> Table {
        Table {
            indent,
            widths: widths.to_vec(),
        }
    }

    /// Prints one row; cells beyond the widths given are printed as they are.
    pub fn row<S: AsRef<str>>(&self, cells: &[S]) {
        println!("{}", self.line(cells));
    }

    fn line<S: AsRef<str>>(&self, cells: &[S]) -> String {
        let mut out = self.indent.to_string();
        for (i, cell) in cells.iter().enumerate() {
            let (cell, w) = (cell.as_ref(), self.widths.get(i).copied().unwrap_or(0));
            if i == 0 {
                out += &format!("{cell:<w$}");
            } else {
                out += &format!(" {cell:>w$}");
            }
        }
        out.trim_end().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_go_left_and_figures_right() {
        let t = Table::new("  ", &[6, 5]);
        assert_eq!(t.line(&["wall", "1.50"]), "  wall    1.50");
        // Indent, an empty label of 6, a space, a figure right-aligned in 5.
        assert_eq!(t.line(&["", "a"]), format!("  {}a", " ".repeat(6 + 1 + 4)));
    }
}
