-- The values of one tag (here Modality) and how many instances hold each, from the summary.
-- Values are kept for short text of categorical VRs only (see README: Reports); for UIDs,
-- times or decimals use `indexer tags --tag KEYWORD`, which counts them from the elements.
SELECT v.value,
       SUM(v.instances) AS instances
FROM tag_values v
JOIN tag_keys k ON k.id = v.key_id
WHERE k.key = '(0008,0060)'
GROUP BY v.value
ORDER BY instances DESC, v.value;
