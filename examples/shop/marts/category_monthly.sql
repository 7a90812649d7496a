-- Monthly totals per category and a running total.
WITH monthly AS (
    SELECT category,
           to_char(order_date, '%Y-%m') AS month,
           sum(quantity) AS units,
           sum(amount) AS revenue
    FROM order_lines
    GROUP BY category, to_char(order_date, '%Y-%m')
)
SELECT category,
       month,
       units,
       revenue,
       sum(revenue) OVER (PARTITION BY category ORDER BY month
                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running_revenue
FROM monthly
