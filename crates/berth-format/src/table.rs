//! Docker's `--format` handling for list and inspect commands, and its tab-aligned tables.

use std::io::Write;

use serde_json::Value;

use super::{FormatError, MissingKey, Template, gofmt::to_go_json_indent};

/// Docker's table settings: Go's `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`.
const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

/// Aligns tab-terminated cells like docker's tabwriter (minwidth 10, padding 3, spaces):
/// a column is as wide as its widest cell plus 3, and at least 10; the text after a line's
/// last tab is not padded.
pub fn tabwrite(text: &str) -> String {
    // Go computes max(minwidth, cell + padding); the crate computes max(minwidth, cell) +
    // padding, so its minwidth is ours less the padding.
    let mut tw = tabwriter::TabWriter::new(Vec::new())
        .minwidth(MIN_WIDTH - PADDING)
        .padding(PADDING);
    // Writing to a Vec cannot fail.
    let _ = tw.write_all(text.as_bytes());
    let _ = tw.flush();
    String::from_utf8_lossy(&tw.into_inner().unwrap_or_default()).into_owned()
}

/// True if docker treats `format` as a table format (it starts with `table`).
pub fn is_table(format: &str) -> bool {
    format.starts_with("table")
}

/// Docker's `Context.preFormat`: drops a leading `table`, maps `json` to `{{json .}}`,
/// trims spaces, and turns a typed `\t` / `\n` into a real tab / newline.
pub fn prepare_format(format: &str) -> String {
    let f = if is_table(format) {
        &format["table".len()..]
    } else if format == "json" {
        "{{json .}}"
    } else {
        format
    };
    f.trim_matches(' ')
        .replace("\\t", "\t")
        .replace("\\n", "\n")
}

/// Renders a docker list (`images`, `ps`, `volume ls`, ...) as `--format` asks.
///
/// `format` is what the command resolved, as docker's formatters do: e.g. `images` uses
/// `"table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"` for the default
/// `table`, `"{{.ID}}"` for `-q`, and the user's `--format` otherwise (`json` included).
/// `header` maps field names to column titles (`{"ID": "IMAGE ID", ...}`); each row is an
/// object whose fields are the already-formatted column values (strings such as "4.26MB"),
/// a field with an object value serving `{{.Label "key"}}`-style lookups.
///
/// A `table` format prints the header (rendered with docker's header functions; an error
/// there truncates the header as in docker) then each row, aligned by [`tabwrite`].
/// Otherwise each row's text is followed by a newline, with no header. Rows are executed
/// with missing keys as errors, as docker fails on a field its row type lacks; the
/// caller prefixes errors with "template parsing error: " as docker does. `{{json .}}` (and
/// the `json` format) marshals a row like docker: HTML-escaped (`"\u003cnone\u003e"`), sorted
/// keys, object-valued (`.Label "key"`) fields left out.
pub fn render_list(format: &str, header: &Value, rows: &[Value]) -> Result<String, FormatError> {
    let mut tmpl = Template::parse(&prepare_format(format))?.missing_key(MissingKey::Error);
    tmpl.row_json = true;
    let mut body = String::new();
    for row in rows {
        body.push_str(&tmpl.execute(row)?);
        body.push('\n');
    }
    if !is_table(format) {
        return Ok(body);
    }
    let (mut text, _) = tmpl
        .clone()
        .missing_key(MissingKey::Default)
        .execute_partial(header, true);
    text.push('\n');
    text.push_str(&body);
    Ok(tabwrite(&text))
}

/// Renders `docker inspect` output for `items` (the objects as the API returns them).
///
/// An empty format prints the array indented by 4 spaces, `json` prints it compact; both
/// end in a newline. Otherwise the template (used as typed: no `\t` replacement) runs on
/// each item, each output followed by a newline; an item whose execution fails is skipped
/// and its error collected, and if nothing was printed a lone newline is. The outer error
/// is a parse error (docker exits 64); per-item errors are joined by docker with "\n"
/// (exit status 1), each as "template parsing error: <message>".
pub fn render_inspect(
    format: &str,
    items: &[Value],
) -> Result<(String, Vec<FormatError>), FormatError> {
    let array = Value::Array(items.to_vec());
    match format {
        "" => return Ok((to_go_json_indent(&array, false, "    ") + "\n", Vec::new())),
        "json" => return Ok((super::to_go_json(&array, false) + "\n", Vec::new())),
        _ => {}
    }
    let tmpl = Template::parse(format)?;
    let mut out = String::new();
    let mut errors = Vec::new();
    for item in items {
        match tmpl.execute(item) {
            Ok(s) => {
                out.push_str(&s);
                out.push('\n');
            }
            Err(e) => errors.push(e),
        }
    }
    if out.is_empty() {
        out.push('\n');
    }
    Ok((out, errors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image_header() -> Value {
        json!({"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG",
               "CreatedSince": "CREATED", "Size": "SIZE", "Digest": "DIGEST"})
    }

    #[test]
    fn tabwriter_matches_go_settings() {
        // Cells shorter than 7 get minwidth 10; longer ones their width plus 3.
        assert_eq!(tabwrite("a\tb\n"), "a         b\n");
        assert_eq!(tabwrite("abcdefgh\tb\n"), "abcdefgh   b\n");
        assert_eq!(tabwrite("abcdefg\tb\nx\ty\n"), "abcdefg   b\nx         y\n");
        // No trailing spaces after the last column; a trailing tab pads the cell.
        assert_eq!(tabwrite("a\tb\t\n"), "a         b         \n");
        // Lines without tabs end a column block, as in Go.
        assert_eq!(
            tabwrite("aaaaaaaaaaaa\tb\nno tabs\nc\td\n"),
            "aaaaaaaaaaaa   b\nno tabs\nc         d\n"
        );
        // Column blocks: the second column exists only on the first line.
        assert_eq!(
            tabwrite("a\tb\tc\nlonger\td\n"),
            "a         b         c\nlonger    d\n"
        );
        // Wide characters count double, as docker's go-runewidth fork of tabwriter does.
        assert_eq!(tabwrite("日本\tx\nab\ty\n"), "日本      x\nab        y\n");
        assert_eq!(tabwrite("x"), "x");
        assert_eq!(tabwrite(""), "");
    }

    #[test]
    fn table_images_like_docker() {
        let rows = vec![
            json!({"ID": "abc", "Repository": "busybox", "Tag": "latest"}),
            json!({"ID": "0123456789ab", "Repository": "alpine", "Tag": "3.19"}),
        ];
        let out = render_list("table {{.ID}}\\t{{.Repository}}", &image_header(), &rows).unwrap();
        assert_eq!(
            out,
            "IMAGE ID       REPOSITORY\n\
             abc            busybox\n\
             0123456789ab   alpine\n"
        );
        let out = render_list(
            "table {{.ID}}\t{{.Repository}}",
            &image_header(),
            &rows[..1],
        )
        .unwrap();
        assert_eq!(out, "IMAGE ID   REPOSITORY\nabc        busybox\n");
    }

    #[test]
    fn table_default_images_format() {
        let format = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{if .CreatedSince }}{{.CreatedSince}}{{else}}N/A{{end}}\t{{.Size}}";
        let rows = vec![
            json!({"Repository": "busybox", "Tag": "latest", "ID": "65ad0d468eb1",
                               "CreatedSince": "2 weeks ago", "Size": "4.26MB"}),
        ];
        let out = render_list(format, &image_header(), &rows).unwrap();
        assert_eq!(
            out,
            "REPOSITORY   TAG       IMAGE ID       CREATED       SIZE\n\
             busybox      latest    65ad0d468eb1   2 weeks ago   4.26MB\n"
        );
        // No rows: just the header.
        assert_eq!(
            render_list(format, &image_header(), &[]).unwrap(),
            "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE\n"
        );
    }

    #[test]
    fn header_functions_keep_titles() {
        let rows = vec![json!({"Repository": "busybox", "Tag": "v1"})];
        let out = render_list(
            "table {{upper .Repository}}\t{{truncate .Tag 1}}\t{{pad .Tag 1 1}}",
            &image_header(),
            &rows,
        )
        .unwrap();
        assert_eq!(
            out,
            "REPOSITORY   TAG        TAG \nBUSYBOX      v          v1 \n"
        );
    }

    #[test]
    fn non_table_formats() {
        let rows = vec![
            json!({"ID": "a", "Size": "1B"}),
            json!({"ID": "b", "Size": "2B"}),
        ];
        assert_eq!(
            render_list("{{.ID}}", &image_header(), &rows).unwrap(),
            "a\nb\n"
        );
        assert_eq!(
            render_list("{{.ID}}\\t{{.Size}}", &image_header(), &rows).unwrap(),
            "a\t1B\nb\t2B\n"
        );
        assert_eq!(
            render_list("json", &image_header(), &rows).unwrap(),
            "{\"ID\":\"a\",\"Size\":\"1B\"}\n{\"ID\":\"b\",\"Size\":\"2B\"}\n"
        );
        assert_eq!(render_list("{{.ID}}", &image_header(), &[]).unwrap(), "");
        let row = [json!({"Label": {"a": "b"}, "Labels": "a=b", "Tag": "<none>"})];
        assert_eq!(
            render_list("json", &image_header(), &row).unwrap(),
            "{\"Labels\":\"a=b\",\"Tag\":\"\\u003cnone\\u003e\"}\n"
        );
        assert_eq!(
            render_list("{{json .Tag}}", &image_header(), &row).unwrap(),
            "\"<none>\"\n"
        );
        // Unknown fields fail, as on docker's typed row contexts.
        let err = render_list("{{.Nope}}", &image_header(), &rows).unwrap_err();
        assert_eq!(
            err.message(),
            "template: :1:2: executing \"\" at <.Nope>: map has no entry for key \"Nope\""
        );
        assert!(matches!(
            render_list("{{.ID", &image_header(), &rows),
            Err(FormatError::Parse(_))
        ));
    }

    #[test]
    fn label_method_lookup() {
        let rows = vec![json!({"Names": "web", "Label": {"com.example.app": "shop"}})];
        let out = render_list(
            "{{.Names}} {{.Label \"com.example.app\"}} [{{.Label \"x\"}}]",
            &Value::Null,
            &rows,
        )
        .unwrap();
        assert_eq!(out, "web shop []\n");
    }

    #[test]
    fn inspect_rendering() {
        let items = vec![json!({"Id": "abc", "Config": {"Labels": {"a": "<b>"}}})];
        let (out, errs) = render_inspect(
            "{{.Id}} {{json .Config.Labels}} {{.Config.Labels.zz}}",
            &items,
        )
        .unwrap();
        assert_eq!(out, "abc {\"a\":\"<b>\"} <no value>\n");
        assert!(errs.is_empty());
        let (out, _) = render_inspect("", &items).unwrap();
        assert_eq!(
            out,
            "[\n    {\n        \"Id\": \"abc\",\n        \"Config\": {\n            \"Labels\": {\n                \"a\": \"<b>\"\n            }\n        }\n    }\n]\n"
        );
        assert_eq!(render_inspect("", &[]).unwrap().0, "[]\n");
        assert_eq!(
            render_inspect("json", &items).unwrap().0,
            "[{\"Id\":\"abc\",\"Config\":{\"Labels\":{\"a\":\"<b>\"}}}]\n"
        );
        let (out, errs) = render_inspect("{{index .Id 99}}", &items).unwrap();
        assert_eq!(out, "\n");
        assert_eq!(errs.len(), 1);
        assert!(matches!(
            render_inspect("{{.Id", &items),
            Err(FormatError::Parse(_))
        ));
    }
}
