//! FuxiCTR's column `preprocess` functions: what its dataset recipes (`fuxictr/datasets/`,
//! the BARS configs and `demo/`) name. A field with a preprocess may read another column (its
//! *source*): Avazu's `weekday` and `weekend` are derived from the `hour` timestamp and do not
//! exist in the file. A preprocess is written `name` or `name(column)`.

use std::borrow::Cow;

/// A supported preprocess function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Preprocess {
    /// Criteo's bucketing: `floor(ln(x)^2)` for x > 2, else `int(x)`.
    ConvertToBucket,
    /// The hour of day (0–23) of a timestamp.
    ConvertHour,
    /// The weekday of a timestamp's date, Sunday 0, Monday 1, …, Saturday 6 (polars'
    /// `dt.weekday() % 7`).
    ConvertWeekday,
    /// 1 on Saturday and Sunday, else 0.
    ConvertWeekend,
    /// KKBox's ISRC country code: the first two characters.
    ExtractCountryCode,
    /// KKBox's age buckets: 1–10 → 1, …, 51–60 → 6, 61–95 → 7; anything else missing.
    BucketizeAge,
}

/// The names a config may give, for messages.
pub const SUPPORTED: &[&str] = &[
    "convert_to_bucket",
    "convert_hour",
    "convert_weekday",
    "convert_weekend",
    "extract_country_code",
    "bucketize_age",
];

/// Where the timestamp functions look when not told: Avazu's `hour` (`YYMMDDHH`), then the
/// `time_stamp` of FuxiCTR's demo (`YYYY-MM-DD HH:MM:SS`).
const TIMESTAMP_COLUMNS: &[&str] = &["hour", "time_stamp"];

impl Preprocess {
    /// Parses `name` or `name(column)` into the function and its explicit source column.
    pub fn parse(text: &str) -> Result<(Preprocess, Option<String>), String> {
        let text = text.trim();
        let (name, arg) = match text.split_once('(') {
            Some((name, rest)) => {
                let arg = rest.strip_suffix(')').ok_or_else(|| {
                    format!("preprocess `{text}`: expected `name` or `name(column)`")
                })?;
                let arg = arg.trim().trim_matches(|c| c == '"' || c == '\'');
                (name.trim(), (!arg.is_empty()).then(|| arg.to_string()))
            }
            None => (text, None),
        };
        let p = match name {
            "convert_to_bucket" => Preprocess::ConvertToBucket,
            "convert_hour" => Preprocess::ConvertHour,
            "convert_weekday" => Preprocess::ConvertWeekday,
            "convert_weekend" => Preprocess::ConvertWeekend,
            "extract_country_code" => Preprocess::ExtractCountryCode,
            "bucketize_age" => Preprocess::BucketizeAge,
            other => {
                return Err(format!(
                    "preprocess `{other}` is not supported ({})",
                    SUPPORTED.join(", ")
                ))
            }
        };
        Ok((p, arg))
    }

    fn is_timestamp(self) -> bool {
        matches!(
            self,
            Preprocess::ConvertHour | Preprocess::ConvertWeekday | Preprocess::ConvertWeekend
        )
    }

    /// The columns field `field` may read, in order of preference: the explicit argument, the
    /// timestamp columns for the time functions, else the field's own column.
    pub fn source_columns<'a>(self, field: &'a str, arg: Option<&'a str>) -> Vec<&'a str> {
        match arg {
            Some(a) => vec![a],
            None if self.is_timestamp() => TIMESTAMP_COLUMNS.to_vec(),
            None => vec![field],
        }
    }

    /// Applies a string-valued function to a raw cell (`None`: the value is missing, the
    /// field's `fill_na` stands in). `ConvertToBucket` works on numbers and is applied by the
    /// encoder.
    pub fn apply_text(self, raw: &str) -> Result<Option<Cow<'static, str>>, String> {
        let raw = raw.trim();
        Ok(match self {
            Preprocess::ConvertToBucket => unreachable!("convert_to_bucket is numeric"),
            Preprocess::ConvertHour => Some(timestamp(raw)?.hour.to_string().into()),
            Preprocess::ConvertWeekday => Some(timestamp(raw)?.weekday().to_string().into()),
            Preprocess::ConvertWeekend => {
                let w = timestamp(raw)?.weekday();
                Some(if w == 0 || w == 6 { "1" } else { "0" }.into())
            }
            Preprocess::ExtractCountryCode => {
                let code: String = raw.chars().take(2).collect();
                (!code.is_empty()).then(|| code.into())
            }
            Preprocess::BucketizeAge => match raw.parse::<f64>() {
                Ok(age) if (1.0..=95.0).contains(&age) => {
                    let bucket = match age {
                        a if a <= 10.0 => "1",
                        a if a <= 20.0 => "2",
                        a if a <= 30.0 => "3",
                        a if a <= 40.0 => "4",
                        a if a <= 50.0 => "5",
                        a if a <= 60.0 => "6",
                        _ => "7",
                    };
                    Some(bucket.into())
                }
                _ => None,
            },
        })
    }
}

/// A calendar date and hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
}

impl Timestamp {
    /// Sunday 0 … Saturday 6.
    pub fn weekday(&self) -> u32 {
        // 1970-01-01 was a Thursday (4)
        (days_from_civil(self.year, self.month, self.day) + 4).rem_euclid(7) as u32
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Avazu's `YYMMDDHH` (years 2000–2099, as polars' `%y` reads them) or
/// `YYYY-MM-DD HH:MM:SS`.
pub fn timestamp(raw: &str) -> Result<Timestamp, String> {
    let bad = || format!("`{raw}` is not a timestamp (YYMMDDHH or YYYY-MM-DD HH:MM:SS)");
    let num = |s: &str| -> Result<u32, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (year, month, day, hour) = if raw.len() == 8 && raw.bytes().all(|b| b.is_ascii_digit()) {
        (
            2000 + num(&raw[0..2])? as i64,
            num(&raw[2..4])?,
            num(&raw[4..6])?,
            num(&raw[6..8])?,
        )
    } else {
        let (date, time) = raw.split_once(' ').ok_or_else(bad)?;
        let mut d = date.split('-');
        let mut t = time.split(':');
        let (y, m, dd) = (d.next(), d.next(), d.next());
        let (h, mi, s) = (t.next(), t.next(), t.next());
        match (y, m, dd, h, mi, s, d.next(), t.next()) {
            (Some(y), Some(m), Some(dd), Some(h), Some(mi), Some(s), None, None)
                if y.len() == 4 && num(mi)? < 60 && num(s)? < 60 =>
            {
                (num(y)? as i64, num(m)?, num(dd)?, num(h)?)
            }
            _ => return Err(bad()),
        }
    };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || hour > 23 {
        return Err(bad());
    }
    Ok(Timestamp {
        year,
        month,
        day,
        hour,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avazu_hours_weekdays_and_weekends_as_fuxictr_computes_them() {
        // Avazu's first day 2014-10-21 was a Tuesday; polars: weekday 2 → % 7 = 2
        let cases = [
            ("14102100", "0", "2", "0"),
            ("14102523", "23", "6", "1"), // Saturday
            ("14102614", "14", "0", "1"), // Sunday
            ("14102700", "0", "1", "0"),  // Monday
            ("14103009", "9", "4", "0"),  // Thursday
        ];
        for (raw, hour, weekday, weekend) in cases {
            let got = |p: Preprocess| p.apply_text(raw).unwrap().unwrap().into_owned();
            assert_eq!(got(Preprocess::ConvertHour), hour, "{raw}");
            assert_eq!(got(Preprocess::ConvertWeekday), weekday, "{raw}");
            assert_eq!(got(Preprocess::ConvertWeekend), weekend, "{raw}");
        }
    }

    #[test]
    fn demo_timestamps_leap_days_and_bad_values() {
        let t = timestamp("2024-02-29 17:05:00").unwrap();
        assert_eq!((t.hour, t.weekday()), (17, 4)); // a Thursday
        assert_eq!(timestamp("2000-01-01 00:00:00").unwrap().weekday(), 6); // Saturday
        for bad in [
            "",
            "1410210",
            "14102124",
            "14023000",
            "2023-02-29 01:00:00",
            "x4102100",
        ] {
            let err = Preprocess::ConvertHour.apply_text(bad).unwrap_err();
            assert!(err.contains("not a timestamp"), "{bad}: {err}");
        }
    }

    #[test]
    fn kkbox_country_codes_and_age_buckets() {
        let p = Preprocess::ExtractCountryCode;
        assert_eq!(p.apply_text("TWA530887303").unwrap().as_deref(), Some("TW"));
        assert_eq!(p.apply_text("").unwrap(), None);
        let b = |v: &str| Preprocess::BucketizeAge.apply_text(v).unwrap();
        assert_eq!(b("10").as_deref(), Some("1"));
        assert_eq!(b("10.5").as_deref(), Some("2"));
        assert_eq!(b("61").as_deref(), Some("7"));
        assert_eq!(b("95").as_deref(), Some("7"));
        assert_eq!(b("0"), None);
        assert_eq!(b("96"), None);
        assert_eq!(b("n/a"), None);
    }

    #[test]
    fn names_arguments_and_sources() {
        assert_eq!(
            Preprocess::parse("convert_weekday").unwrap(),
            (Preprocess::ConvertWeekday, None)
        );
        assert_eq!(
            Preprocess::parse("extract_country_code(isrc)").unwrap(),
            (Preprocess::ExtractCountryCode, Some("isrc".into()))
        );
        let err = Preprocess::parse("convert_month").unwrap_err();
        assert!(
            err.contains("convert_month") && err.contains("convert_weekend"),
            "{err}"
        );
        assert_eq!(
            Preprocess::ConvertWeekend.source_columns("weekend", None),
            vec!["hour", "time_stamp"]
        );
        assert_eq!(
            Preprocess::BucketizeAge.source_columns("bd", None),
            vec!["bd"]
        );
    }
}
