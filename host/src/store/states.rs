//! The states a stored row can be in, as enums: a delivery's status and a
//! sandbox's state. (A receiver's status is core's `config::Status`.)
//!
//! Each is stored as its snake_case name, which the schema constrains with a
//! CHECK (migration 2), and shown by the API with the same name, so the text
//! lives in one place: [`text_enum!`] writes the enum with its name mapping,
//! serde and rusqlite conversions. A stored value this build does not know is a
//! read error naming it, never a silent default.

/// An enum stored and shown by snake_case name.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }

            /// Every name, for messages: `pending, succeeded, …`.
            pub fn names() -> String {
                Self::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let text = value.as_str()?;
                Self::parse(text).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(
                        format!("unknown {} {text:?}", stringify!($name)).into(),
                    )
                })
            }
        }
    };
}

text_enum! {
    /// Where a delivery is: actions still to run, all done, given up, or none
    /// planned.
    DeliveryStatus {
        Pending => "pending",
        Succeeded => "succeeded",
        Failed => "failed",
        NoMatch => "no_match",
    }
}

text_enum! {
    /// A sandbox's state on its plane.
    SandboxState {
        Running => "running",
        Paused => "paused",
        Deleted => "deleted",
        Failed => "failed",
    }
}

impl SandboxState {
    /// Running or paused: a process tree that exists.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_serde_and_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for s in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            let back: DeliveryStatus = conn.query_row("SELECT ?1", [s], |r| r.get(0)).unwrap();
            assert_eq!(back, *s);
        }
        for s in SandboxState::ALL {
            assert_eq!(SandboxState::parse(&s.to_string()), Some(*s));
        }
        assert_eq!(
            DeliveryStatus::names(),
            "pending, succeeded, failed, no_match"
        );
        let unknown = conn
            .query_row("SELECT 'lost'", [], |r| r.get::<_, DeliveryStatus>(0))
            .unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("unknown DeliveryStatus \"lost\""),
            "{unknown}"
        );
    }
}
