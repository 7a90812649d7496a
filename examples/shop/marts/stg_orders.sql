-- Normalised statuses; no bad quantities, no duplicated lines.
SELECT DISTINCT order_id,
       customer_id,
       product_id,
       quantity,
       order_date,
       lower(trim(status)) AS status
FROM orders
WHERE quantity > 0
