//! `vfioctl schema`: prints the JSON Schema of the config file.

use super::Exit;

pub fn run() -> Exit {
    out!("{}", crate::config::schema::json_schema_text());
    Exit::Done
}
