//! A partial reading of a stored `PartnerScore`: which designations qualify, and nothing
//! else. Counting qualified partners reads every stored score each minute; the fields read
//! here are two per designation, and prost skips every other field without building it
//! (explanations, windows, forecast).

/// A `PartnerScore` (its field 6) seen through the designations' names and qualification.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QualifiedView {
    #[prost(message, repeated, tag = "6")]
    pub designations: Vec<DesignationQualified>,
}

/// A `DesignationScore` (fields 1 and 3).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DesignationQualified {
    #[prost(string, tag = "1")]
    pub designation: String,
    #[prost(bool, tag = "3")]
    pub qualified: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The view reads the same names and flags as the whole message. The score is a real
    /// evaluation with one designation marked qualified, so a wrong tag cannot pass unseen.
    #[test]
    fn reads_what_the_whole_score_says() {
        let mut whole = crate::proto::one_acr_line_score();
        whole.designations[1].qualified = true;
        let view = QualifiedView::decode(whole.encode_to_vec().as_slice()).unwrap();
        let read: Vec<(String, bool)> = view.designations.into_iter().map(|d| (d.designation, d.qualified)).collect();
        let expected: Vec<(String, bool)> =
            whole.designations.iter().map(|d| (d.designation.clone(), d.qualified)).collect();
        assert_eq!(read, expected);
        assert_eq!(read.iter().filter(|(_, q)| *q).count(), 1);
    }
}
