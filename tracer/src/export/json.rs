//! The JSON contract (`"schema": 1`): the report as it is, pretty-printed, one trailing newline.

use std::io::Write;

use serde::Serialize;

pub(super) fn write<T: Serialize>(value: &T, out: &mut dyn Write) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}
