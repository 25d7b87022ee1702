-- Instances, series and studies per modality (what `indexer stats --by modality` prints).
SELECT i.modality,
       COUNT(*) AS instances,
       COUNT(DISTINCT i.series_ref) AS series,
       COUNT(DISTINCT s.study_ref) AS studies
FROM instances i
LEFT JOIN series s ON s.id = i.series_ref
GROUP BY i.modality
ORDER BY instances DESC, i.modality;
