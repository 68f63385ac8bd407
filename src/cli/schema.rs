//! `vfioctl schema`: prints the JSON Schema of the config file.

use super::{args, Exit};

pub fn run(_global: &args::GlobalArgs) -> Exit {
    print!("{}", crate::config::schema::json_schema_text());
    Exit::Done
}
