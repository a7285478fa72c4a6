//! Cutting long texts for the log, saying what was cut.

/// `text` holds the first bytes of a text of `total` bytes (`total >= text.len()`): makes it
/// at most `max` bytes in all, on a character boundary, ending with a note of the whole
/// length when anything is missing. What it leaves is at most `max` bytes, so cutting
/// again (with the length it now has) changes nothing and the note keeps the true length.
pub fn cut_noting(text: &mut String, max: usize, total: usize) {
    if total <= text.len() && text.len() <= max {
        return;
    }
    let note = format!("…[truncated, {total} bytes in all]");
    // Too small a limit for the note: the text is just cut.
    let fits = note.len() <= max;
    let mut end = if fits { max - note.len() } else { max }.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    if fits {
        text.push_str(&note);
    }
}
