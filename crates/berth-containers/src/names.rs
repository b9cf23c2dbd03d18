//! Container names: validation and Docker-style generated names.

use berth_types::{Error, Result};

const LEFT: &[&str] = &[
    "admiring",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "blissful",
    "bold",
    "brave",
    "busy",
    "charming",
    "clever",
    "compassionate",
    "competent",
    "confident",
    "cool",
    "dazzling",
    "determined",
    "eager",
    "ecstatic",
    "elastic",
    "elegant",
    "epic",
    "exciting",
    "fervent",
    "festive",
    "focused",
    "friendly",
    "gallant",
    "gifted",
    "happy",
    "hopeful",
    "jolly",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "relaxed",
    "reverent",
    "romantic",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "suspicious",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "upbeat",
    "vibrant",
    "vigilant",
    "wizardly",
    "wonderful",
    "youthful",
    "zealous",
    "zen",
];
const RIGHT: &[&str] = &[
    "albattani",
    "allen",
    "archimedes",
    "babbage",
    "banach",
    "bardeen",
    "bell",
    "bohr",
    "booth",
    "borg",
    "bose",
    "brown",
    "cannon",
    "carson",
    "cerf",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "elion",
    "euclid",
    "euler",
    "fermat",
    "feynman",
    "galileo",
    "gauss",
    "goldberg",
    "goodall",
    "hamilton",
    "hawking",
    "hodgkin",
    "hopper",
    "hypatia",
    "jennings",
    "johnson",
    "kalam",
    "kepler",
    "knuth",
    "lalande",
    "lamport",
    "leakey",
    "liskov",
    "lovelace",
    "mccarthy",
    "meitner",
    "mendel",
    "morse",
    "newton",
    "nobel",
    "noether",
    "pascal",
    "pasteur",
    "perlman",
    "pike",
    "poincare",
    "ritchie",
    "rosalind",
    "shannon",
    "shockley",
    "sinoussi",
    "stonebraker",
    "swartz",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "volhard",
    "wescoff",
    "wilson",
    "wozniak",
    "wright",
    "yalow",
];

pub fn generate() -> String {
    let l = LEFT[rand::random_range(0..LEFT.len())];
    let r = RIGHT[rand::random_range(0..RIGHT.len())];
    format!("{l}_{r}")
}

/// Docker's rule: `^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$`. Returns the name without `/`.
pub fn validate(name: &str) -> Result<String> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let b = n.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
    if !ok {
        return Err(Error::invalid(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    Ok(n.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::validate("/web-1").unwrap(), "web-1");
        assert!(super::validate("a").is_err());
        assert!(super::validate("-a").is_err());
        assert!(super::validate("a b").is_err());
        assert!(super::generate().contains('_'));
    }
}
