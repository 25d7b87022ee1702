-- The same question as tag_usage.sql for public top-level tags, asked of the element rows
-- themselves: reads every element row, so it takes minutes on a large archive. Useful to
-- check the summary, or to add conditions the summary does not keep (e.g. on e.length).
-- Flags 1 (file meta) and 2 (sequence item) mark rows that are not data elements.
SELECT p.tag,
       p.keyword,
       COUNT(DISTINCT e.file_id) AS instances,
       COUNT(*) AS occurrences
FROM elements e
JOIN paths p ON p.id = e.path_id
WHERE p.depth = 0
  AND (e.flags & 3) = 0
  AND (p.tag / 65536) % 2 = 0
GROUP BY p.tag, p.keyword
ORDER BY p.tag;
